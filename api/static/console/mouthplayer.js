// Animates an avatar's portrait from a render's per-frame mouth series and its audio alone, with
// no video file: for front-ends that cannot afford video. Inputs, all from the /v1 API:
//   GET /v1/avatars/{id}/image?max_side=0  the portrait (first frame)
//   GET /v1/avatars/{id}/face              mouth corners, inner/outer lip points and chin in its pixels
//   GET /v1/jobs/{id}/mouth                {fps, frames: [{t, open 0..1, width -1..1}]}
//   the render's audio file
// Each animation frame reads the audio clock, takes the mouth parameters at that time and draws
// the portrait with the lower lip moved down by the opening (the parted lips show a dark mouth
// interior) over a width that follows the spreading or rounding of the lips.

const MAX_GAP = 0.2;  // the opening at open = 1, as a share of the mouth width (as the warp engine caps it)

function dist(a, b) {
  return Math.hypot(a[0] - b[0], a[1] - b[1]);
}

export class MouthPlayer {
  constructor(canvas, audio) {
    this.canvas = canvas;
    this.audio = audio;
    this.ctx = canvas.getContext("2d");
    this.portrait = null;
    this.face = null;
    this.series = null;
    this.raf = null;
    this.frameCount = 0;
    audio.addEventListener("play", () => this._loop());
    audio.addEventListener("seeked", () => this.draw(audio.currentTime));
    audio.addEventListener("ended", () => this.draw(0));
  }

  /** portrait: a loaded HTMLImageElement; face: /v1/avatars/{id}/face; series: /v1/jobs/{id}/mouth. */
  load(portrait, face, series) {
    this.portrait = portrait;
    this.face = face;
    this.series = series;
    this.canvas.width = face.width;
    this.canvas.height = face.height;
    // The mouth interior's colour: the lips' own, much darker.
    const probe = document.createElement("canvas");
    probe.width = face.width;
    probe.height = face.height;
    const pctx = probe.getContext("2d", { willReadFrequently: true });
    pctx.drawImage(portrait, 0, 0, face.width, face.height);
    const [x, y] = face.lower_outer;
    const [ux, uy] = face.lower_inner;
    const px = pctx.getImageData(Math.round((x + ux) / 2), Math.round((y + uy) / 2), 1, 1).data;
    this.interior = `rgb(${Math.round(px[0] * 0.28)}, ${Math.round(px[1] * 0.16)}, ${Math.round(px[2] * 0.16)})`;
    this.draw(0);
  }

  params(t) {
    const frames = this.series.frames;
    if (!frames.length) return { open: 0, width: 0 };
    const f = t * this.series.fps;
    const i = Math.max(0, Math.min(frames.length - 1, Math.floor(f)));
    const j = Math.min(frames.length - 1, i + 1);
    const k = Math.max(0, Math.min(1, f - i));
    return {
      open: frames[i].open * (1 - k) + frames[j].open * k,
      width: frames[i].width * (1 - k) + frames[j].width * k,
    };
  }

  draw(t) {
    const { ctx, face, portrait } = this;
    if (!portrait || !face) return;
    const W = face.width, H = face.height;
    ctx.drawImage(portrait, 0, 0, W, H);
    const ended = this.audio.ended || t >= this.audio.duration;
    const { open, width } = ended ? { open: 0, width: 0 } : this.params(t);
    this.frameCount += 1;
    this.lastOpen = open;
    if (open < 0.02) return;

    // Column by column across the mouth: the lower lip's inner edge (a curve through the corners
    // and the lower inner lip point) moves down by the opening, most in the middle and not at all
    // at the corners; below it the lower lip and chin are squeezed into what is left down to
    // below the chin (which stays put), and the parted lips show a dark interior.
    const L = face.mouth_left, R = face.mouth_right;
    const mw = dist(L, R);
    const cx = (L[0] + R[0]) / 2;
    const half = (mw / 2) * (0.96 + 0.08 * Math.max(-1, Math.min(1, width)));
    const lowerY = Math.max(face.lower_inner[1], face.upper_inner[1]);
    const gap = Math.min(1, open) * MAX_GAP * mw;
    const bottom = Math.min(H, face.chin[1] + (face.chin[1] - lowerY) * 0.25);
    const x0 = Math.max(0, Math.floor(cx - half)), x1 = Math.min(W - 1, Math.ceil(cx + half));
    const shade = ctx.createLinearGradient(0, lowerY - gap * 0.3, 0, lowerY + gap);
    shade.addColorStop(0, this.interior);
    shade.addColorStop(1, "rgb(12, 4, 4)");
    ctx.fillStyle = shade;
    for (let x = x0; x < x1; x += 1) {
      const u = (x + 0.5 - cx) / half;
      if (Math.abs(u) >= 1) continue;
      const bow = 1 - u * u;
      const cornerY = L[1] + (R[1] - L[1]) * ((x + 0.5 - L[0]) / Math.max(1, R[0] - L[0]));
      const lipY = cornerY + (lowerY - cornerY) * bow;
      const shift = gap * Math.sqrt(bow);
      if (shift < 0.3 || bottom - lipY < shift + 2) continue;
      ctx.drawImage(portrait, x, lipY, 1, bottom - lipY, x, lipY + shift, 1, bottom - lipY - shift);
      ctx.fillRect(x, lipY, 1, shift);
    }
  }

  _loop() {
    cancelAnimationFrame(this.raf);
    const step = () => {
      this.draw(this.audio.currentTime);
      if (!this.audio.paused && !this.audio.ended) this.raf = requestAnimationFrame(step);
    };
    this.raf = requestAnimationFrame(step);
  }

  stop() {
    cancelAnimationFrame(this.raf);
    this.audio.pause();
  }
}
