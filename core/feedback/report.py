"""The answer's score (0-100) with its components, and a short rule-based summary in Mandarin or English.

Components, each 0-100, and their weights in the score:

* presence (0.20): share of the answer with the face in the picture
* eye_contact (0.35): share of the answer looking at the camera (head pose and gaze)
* composure (0.15): how still the head is
* eyes (0.10): eyes open, blinking at a natural rate
* expression (0.10): smiling raises it, pressed lips lower it, neutral is 60
* speaking (0.10): share of the answer with the mouth moving

Without a face for most of the answer only presence counts: nothing else can be judged.
"""

from __future__ import annotations

from core.feedback.measure import AnswerMeasures

WEIGHTS = {"presence": 0.20, "eye_contact": 0.35, "composure": 0.15, "eyes": 0.10, "expression": 0.10,
           "speaking": 0.10}
MIN_FACE_SHARE = 0.2  # below it only presence is judged
# Thresholds of the measures (see core/feedback/measure.py for their units).
SMILE_AT = 0.08  # mouth corners this far (in mouth widths) above the lip centre: a clear smile
THIN_LIPS = 0.10  # lips thinner than this share of the mouth width: pressed together
NATURAL_BLINKS = (6.0, 30.0)  # per minute
HALF_CLOSED = 0.18  # lid gap / eye width
STEADY_MOTION = 0.03  # std of the nose position in face widths: a still head
SPEAKING_FULL = 0.35  # this share of moving-mouth samples counts as fully speaking


def _clip(value: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return max(lo, min(hi, value))


def _eyes(m: AnswerMeasures) -> float:
    openness = _clip((m.eye_open or 0.0) / (1.6 * HALF_CLOSED))
    rate = m.blink_rate_per_min or 0.0
    lo, hi = NATURAL_BLINKS
    # A few seconds may hold no blink at all; only a long answer without one reads as staring.
    blink = 1.0 if lo <= rate <= hi or (rate < lo and m.duration_s < 20) else 0.7 if rate < lo else \
        _clip(1.0 - (rate - hi) / 40.0, 0.3)
    return 100.0 * openness * blink


def components(m: AnswerMeasures) -> dict[str, float]:
    parts = {name: 0.0 for name in WEIGHTS}
    parts["presence"] = 100.0 * m.face_share
    if m.face_share < MIN_FACE_SHARE:
        return parts
    parts["eye_contact"] = 100.0 * _clip(m.looking_share / max(m.face_share, 1e-9) * min(1.0, m.face_share / 0.9))
    parts["composure"] = 100.0 * _clip(1.0 - max(0.0, (m.head_motion or 0.0) - STEADY_MOTION) / 0.12)
    parts["eyes"] = _eyes(m)
    smile = _clip((m.smile or 0.0) / SMILE_AT)
    tension = _clip((THIN_LIPS - (m.lip_thickness or THIN_LIPS)) / THIN_LIPS)
    parts["expression"] = 100.0 * _clip(0.6 + 0.4 * smile - 0.6 * tension)
    parts["speaking"] = 100.0 * _clip((m.speaking_share or 0.0) / SPEAKING_FULL)
    return {k: round(v, 1) for k, v in parts.items()}


def score(parts: dict[str, float]) -> int:
    return int(round(sum(WEIGHTS[k] * parts[k] for k in WEIGHTS)))


TEXTS = {
    "no_face": ("画面中几乎没有检测到人脸，无法评估表情和姿态，请保持面部完整出现在镜头中。",
                "No face was visible for most of the answer, so expression and posture could not be judged; "
                "keep your face in the frame."),
    "face_partly_missing": ("有一段时间面部离开了画面。", "The face left the frame for part of the answer."),
    "eye_contact_good": ("大部分时间看向镜头，眼神交流良好。", "Looked at the camera most of the time: good eye contact."),
    "eye_contact_partial": ("有一部分时间视线离开了镜头。", "Looked away from the camera for part of the answer."),
    "looking_aside": ("多数时间头部转向一侧，没有看镜头。", "The head was turned to the side most of the time, away from the camera."),
    "looking_down": ("多数时间低着头，视线没有看向镜头。", "Looked down most of the time instead of at the camera."),
    "looking_up": ("多数时间抬头向上看，没有看镜头。", "Looked up most of the time instead of at the camera."),
    "gaze_away": ("眼睛经常看向别处，没有看镜头。", "The eyes often looked elsewhere rather than at the camera."),
    "head_steady": ("头部姿态平稳。", "The head was steady."),
    "head_unsteady": ("头部晃动较多，显得不够沉稳。", "The head moved a lot, which looks restless."),
    "blinks_frequent": ("眨眼频繁，可能有些紧张。", "Blinked often, which can read as nervous."),
    "blinks_rare": ("几乎没有眨眼，目光略显僵硬。", "Hardly blinked; the gaze looks a little fixed."),
    "eyes_half_closed": ("眼睛经常半闭，显得精神不足。", "The eyes were often half closed, which looks tired."),
    "smiling": ("面带微笑，表情亲和。", "Smiled, with a friendly expression."),
    "tense_mouth": ("嘴唇紧抿，表情略显紧张。", "The lips were pressed together, which looks tense."),
    "neutral_expression": ("表情平和自然。", "The expression was calm and natural."),
    "little_speech": ("回答过程中说话的时间较少。", "Spoke for only a small part of the answer."),
}
AWAY_FINDINGS = {"side": "looking_aside", "down": "looking_down", "up": "looking_up", "eyes": "gaze_away"}


def _gaze_finding(m: AnswerMeasures) -> str:
    share = m.looking_share / max(m.face_share, 1e-9)
    if share >= 0.7:
        return "eye_contact_good"
    away = {k: v for k, v in m.away_reasons.items() if k in AWAY_FINDINGS}
    if share <= 0.4 and away:
        return AWAY_FINDINGS[max(sorted(away), key=away.get)]
    return "eye_contact_partial"


def findings(m: AnswerMeasures) -> list[str]:
    """What the summary says, as codes, in the order it says it."""
    if m.face_share < MIN_FACE_SHARE:
        return ["no_face"]
    out = [] if m.face_share >= 0.8 else ["face_partly_missing"]
    out.append(_gaze_finding(m))
    out.append("head_steady" if (m.head_motion or 0.0) <= STEADY_MOTION + 0.03 else "head_unsteady")
    rate = m.blink_rate_per_min or 0.0
    if (m.eye_open or 0.0) < HALF_CLOSED:
        out.append("eyes_half_closed")
    elif rate > NATURAL_BLINKS[1] + 10:
        out.append("blinks_frequent")
    elif rate < 2 and m.duration_s >= 20:
        out.append("blinks_rare")
    smile = (m.smile or 0.0) >= SMILE_AT
    tense = (m.lip_thickness or 1.0) < THIN_LIPS
    out.append("smiling" if smile and not tense else "tense_mouth" if tense else "neutral_expression")
    if (m.speaking_share or 0.0) < 0.1:
        out.append("little_speech")
    return out


def summary(codes: list[str], language: str, total: int) -> str:
    lang = 0 if language == "zh" else 1
    head = f"综合得分 {total} 分。" if lang == 0 else f"Overall score {total}/100. "
    return head + ("" if lang == 0 else " ").join(TEXTS[c][lang] for c in codes)
