"""The operator's material and the offline `faq` matcher that answers from it.

Material (one per room, JSON; CSV uploads are converted): a product list with facts and prices,
question/answer pairs, and the shop's standing answers (shipping, how to buy, discounts, returns).
Any text may be a string or {"zh": ..., "en": ...}; the room's language picks, the other is the fallback.

Matching copes with paraphrase without a model: both sides are normalised through a synonym table
(多少钱/价钱/how much -> one token), then compared as IDF-weighted sets of Chinese characters and
character bigrams, English words, and the toneless pinyin of the Chinese (a homophone typo such as
宝温杯 still finds 保温杯). A question names a product when enough of one of its names is present;
what it asks about (price, shipping, ...) comes from the synonym tokens; a question/answer pair
matches by weighted overlap. Below the thresholds the room deflects politely.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.errors import Invalid
from core.text import check_tree

SAMPLE_PATH = Path(__file__).resolve().parent / "material" / "sample_products.json"
MAX_MATERIAL_BYTES = 256 * 1024
MAX_ITEMS = 500
SHOP_TOPICS = ("shipping", "how_to_buy", "discount", "returns")

# Synonym groups: every phrase becomes its group's token, on the question and on the material alike.
# Shop topics first: a question that asks about one is answered with the shop's standing answer.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "price": ("多少钱", "多少米", "价格", "价钱", "什么价", "啥价", "几块钱", "几块", "几元", "售价", "卖多少", "怎么卖",
              "how much", "price", "prices", "cost", "costs"),
    "how_to_buy": ("怎么买", "哪里买", "在哪买", "在哪里买", "怎么下单", "如何下单", "如何购买", "怎么购买", "怎么拍",
                   "链接", "小黄车", "购物车", "how do i buy", "how to buy", "where can i buy", "how do i order",
                   "how can i buy", "how to order", "purchase", "check out", "checkout"),
    "discount": ("优惠券", "优惠", "折扣", "打折", "便宜点", "便宜", "活动", "满减", "discount", "discounts", "coupon",
                 "coupons", "deal", "deals", "offer", "offers", "sale", "cheaper"),
    "shipping": ("发货", "快递", "物流", "包邮", "邮费", "运费", "多久到", "几天到", "发出来", "发出", "寄出", "shipping",
                 "ship", "ships", "shipped", "delivery", "deliver", "delivered", "sent out", "arrive", "postage"),
    "returns": ("退货", "退换", "退款", "可以退", "能退", "换货", "不满意", "returns", "return", "refund", "exchange"),
    "gift": ("赠品", "小礼物", "礼物", "礼品", "赠送", "送东西", "gift", "gifts", "freebie", "free gift"),
    "invoice": ("发票", "开票", "invoice", "receipt"),
    "genuine": ("正品", "真货", "假货", "原装", "genuine", "authentic", "fake", "original"),
    "instalment": ("分期", "花呗", "instalment", "instalments", "installment", "installments"),
    "size": ("尺码", "码数", "什么码", "几码", "码", "尺寸", "size", "sizes", "fit"),
    "color": ("颜色", "色", "color", "colour", "colors", "colours"),
    "battery": ("续航", "电池", "待机", "battery", "charge"),
    "sensitive": ("敏感肌", "敏感皮肤", "敏感", "sensitive"),
    "people": ("几口人", "几个人", "多少人", "口人", "人用", "people", "family"),
    "keep_hot": ("保温", "保冷", "hot", "cold", "warm"),
}
# Question frames carry no content: "有没有优惠" and "有没有赠品" share nothing that matters.
FRAMES_ZH = ("有没有", "是不是", "能不能", "可不可以", "会不会", "要不要", "怎么样", "请问", "一下")
STOP_ZH = set("的了吗啊呢吧呀嘛哦么是有在这那个我你他她它们和就都也还要会能可以请问一下")
STOP_EN = {"the", "a", "an", "is", "are", "do", "does", "i", "my", "me", "you", "your", "it", "this", "that", "what",
           "whats", "how", "can", "of", "to", "for", "in", "on", "and", "or", "be", "will", "there", "any", "have",
           "has", "with", "please", "today", "s"}
CJK = re.compile(r"[\u4e00-\u9fff]+")
WORD = re.compile(r"[a-z0-9]+")
DEFLECT = {"zh": "这个问题我暂时回答不了，您可以问问商品的价格、优惠、怎么购买或者发货时间。",
           "en": "Sorry, I cannot answer that one here. Ask me about our products, prices, offers, how to buy or shipping."}
PRODUCT_T, QA_T, QA_STRONG_T = 0.5, 0.34, 0.6


def text_in(value, language: str) -> str:
    """A material text in the room's language (or the other one, or "")."""
    if isinstance(value, dict):
        return str(value.get(language) or next((v for v in value.values() if v), ""))
    return "" if value is None else str(value)


def _variants(value) -> list[str]:
    if isinstance(value, dict):
        return [str(v) for v in value.values() if v]
    if isinstance(value, list):
        return [t for v in value for t in _variants(v)]
    return [str(value)] if value else []


# ---------- features ----------

_PHRASES = sorted(((p, tag) for tag, ps in SYNONYMS.items() for p in ps), key=lambda x: -len(x[0]))


@lru_cache(maxsize=4096)
def features(text: str) -> frozenset[str]:
    """Synonym tokens, Chinese characters and bigrams, English words, pinyin syllables and their bigrams."""
    s = unicodedata.normalize("NFKC", text).lower()
    tags = set()
    for phrase, tag in _PHRASES:
        if phrase.isascii():
            pattern = rf"\b{re.escape(phrase)}\b"
            if re.search(pattern, s):
                tags.add(tag)
                s = re.sub(pattern, " ", s)
        elif phrase in s:
            tags.add(tag)
            s = s.replace(phrase, " ")
    out = {f"#{t}" for t in tags}
    for frame in FRAMES_ZH:
        s = s.replace(frame, " ")
    for run in CJK.findall(s):
        chars = [c for c in run if c not in STOP_ZH]
        out.update(chars)
        out.update(a + b for a, b in zip(run, run[1:]))
        syllables = _pinyin("".join(chars))
        out.update(f"py:{p}" for p in syllables)
        out.update(f"py:{a}+{b}" for a, b in zip(syllables, syllables[1:]))
    for word in WORD.findall(s):
        if word in STOP_EN:
            continue
        out.add(f"w:{word[:-1] if len(word) > 3 and word.endswith('s') else word}")
    return frozenset(out)


def _pinyin(chars: str) -> list[str]:
    try:
        from pypinyin import lazy_pinyin  # a dependency already (the Mandarin voice)
    except ImportError:
        return []
    return lazy_pinyin(chars)


def _weight(f: str, idf: dict[str, float]) -> float:
    base = idf.get(f, 2.0)
    return base * (2.0 if f.startswith("#") else 0.5 if f.startswith("py:") else 1.0)


@dataclass(frozen=True)
class Match:
    kind: str  # product | shop | qa | deflect
    key: str  # product id, shop topic, qa id ("" when deflected)
    score: float
    answer: str
    intent: str = ""  # for products: price, a fact, or "" (a short description)

    @property
    def label(self) -> str:
        return "deflect" if self.kind == "deflect" else f"{self.kind}:{self.key}" + (
            "/price" if self.intent == "price" else "")


class FaqIndex:
    """One material, ready to match (built once per material and language)."""

    def __init__(self, material: dict, language: str) -> None:
        self.m, self.lang = material, language
        self.products = material.get("products") or []
        self.qa = material.get("qa") or []
        self.shop = material.get("shop") or {}
        docs: list[frozenset[str]] = []
        self.names = [[features(n) for n in _variants(p.get("name")) + _variants(p.get("aliases"))]
                      for p in self.products]
        self.facts = [[features(f) for f in _variants_list(p.get("facts"))] for p in self.products]
        self.qs = [[features(q) for q in _variants(item.get("q"))] for item in self.qa]
        for group in (*self.names, *self.facts, *self.qs):
            docs.extend(group)
        n = max(1, len(docs))
        counts: dict[str, int] = {}
        for d in docs:
            for f in d:
                counts[f] = counts.get(f, 0) + 1
        self.idf = {f: math.log(1 + n / c) for f, c in counts.items()}

    def _cover(self, needle: frozenset[str], hay: frozenset[str]) -> float:
        """The weighted share of `needle` present in `hay`."""
        total = sum(_weight(f, self.idf) for f in needle)
        return sum(_weight(f, self.idf) for f in needle & hay) / total if total else 0.0

    def _sim(self, a: frozenset[str], b: frozenset[str]) -> float:
        return math.sqrt(self._cover(a, b) * self._cover(b, a))

    def match(self, question: str) -> Match:
        q = features(question)
        qa_score, qa_i = max(((max((self._sim(q, v) for v in vs), default=0.0), i) for i, vs in enumerate(self.qs)),
                             default=(0.0, -1))
        if qa_score >= QA_STRONG_T:
            return self._qa(qa_i, qa_score)
        topic = next((t for t in ("shipping", "returns", "how_to_buy", "discount") if f"#{t}" in q and t in self.shop),
                     None)
        p_score, p_i = max(((max((self._cover(n, q) for n in names), default=0.0), i)
                            for i, names in enumerate(self.names)), default=(0.0, -1))
        if topic and not (topic == "discount" and p_score >= PRODUCT_T):
            return Match("shop", topic, 1.0, text_in(self.shop[topic], self.lang))
        if p_score >= PRODUCT_T:
            return self._product(p_i, p_score, q, "#discount" in q)
        if qa_score >= QA_T:
            return self._qa(qa_i, qa_score)
        if "#price" in q and self.products:
            return Match("shop", "price", 0.5, self._price_list())
        return Match("deflect", "", max(qa_score, p_score), DEFLECT.get(self.lang, DEFLECT["en"]))

    def _qa(self, i: int, score: float) -> Match:
        item = self.qa[i]
        return Match("qa", str(item.get("id") or i), score, text_in(item.get("a"), self.lang))

    def _product(self, i: int, score: float, q: frozenset[str], discount: bool) -> Match:
        p = self.products[i]
        name, price = text_in(p.get("name"), self.lang), text_in(p.get("price"), self.lang)
        zh = self.lang == "zh"
        if "#price" in q or discount:
            answer = f"{name}，{price}。" if zh else f"The {name} is {price}."
            if discount and "discount" in self.shop:
                answer += ("" if zh else " ") + text_in(self.shop["discount"], self.lang)
            return Match("product", str(p.get("id") or i), score, answer, "price")
        facts = _variants_list(p.get("facts"))
        best = max(range(len(facts)), key=lambda j: self._cover(q - self.names_union(i), self.facts[i][j]),
                   default=None)
        if best is not None and self._cover(q - self.names_union(i), self.facts[i][best]) > 0.15:
            return Match("product", str(p.get("id") or i), score, text_in(p["facts"][best], self.lang), "fact")
        first = text_in((p.get("facts") or [""])[0], self.lang)
        intro = f"{name}，{price}。{first}" if zh else f"The {name}: {price}. {first}"
        return Match("product", str(p.get("id") or i), score, intro.strip(), "")

    def names_union(self, i: int) -> frozenset[str]:
        return frozenset().union(*self.names[i]) if self.names[i] else frozenset()

    def _price_list(self) -> str:
        parts = [f"{text_in(p.get('name'), self.lang)}{'，' if self.lang == 'zh' else ': '}{text_in(p.get('price'), self.lang)}"
                 for p in self.products[:4]]
        return ("；".join(parts) + "。") if self.lang == "zh" else ("; ".join(parts) + ".")


def _variants_list(facts) -> list[str]:
    """Each fact once, all its languages together (a fact matches in either language)."""
    return [" ".join(_variants(f)) for f in (facts or [])]


@lru_cache(maxsize=64)
def _index(raw: str, language: str) -> FaqIndex:
    return FaqIndex(json.loads(raw), language)


def index_for(material: dict, language: str) -> FaqIndex:
    """The index of a material, cached by its content (rooms sharing the sample share one)."""
    return _index(json.dumps(material, sort_keys=True, ensure_ascii=False), language)


@lru_cache(maxsize=1)
def sample_material() -> dict:
    return json.loads(SAMPLE_PATH.read_text(encoding="utf-8"))


# ---------- the operator's upload ----------

def parse_material(raw: bytes, filename: str = "", content_type: str = "") -> dict:
    """JSON ({products, qa, shop}) or CSV (product columns name, price, facts, aliases; or question,
    answer) into checked material; Invalid with a plain reason otherwise."""
    if len(raw) > MAX_MATERIAL_BYTES:
        raise Invalid("material_too_large", f"the material is {len(raw)} bytes; the limit is {MAX_MATERIAL_BYTES}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Invalid("invalid_material", "the material must be UTF-8 text (JSON or CSV)") from exc
    is_csv = filename.lower().endswith(".csv") or "csv" in content_type or not text.lstrip().startswith(("{", "["))
    if is_csv:
        return check_material(_from_csv(text))
    try:
        return check_material(json.loads(text))
    except json.JSONDecodeError as exc:
        raise Invalid("invalid_material", f"the material is not valid JSON: {exc.msg} (line {exc.lineno})") from exc


def _from_csv(text: str) -> dict:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise Invalid("invalid_material", "the CSV has no rows under its header")
    header = {h.strip().lower() for h in rows[0]}
    split = re.compile(r"[;；|\n]")
    norm = [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items()} for r in rows]
    if {"question", "answer"} <= header:
        return {"qa": [{"id": str(i), "q": split.split(r["question"]), "a": r["answer"]} for i, r in enumerate(norm)
                       if r.get("question") and r.get("answer")]}
    if "name" in header:
        return {"products": [{"id": r.get("id") or str(i), "name": r["name"], "price": r.get("price", ""),
                              "facts": [f.strip() for f in split.split(r.get("facts", "")) if f.strip()],
                              "aliases": [a.strip() for a in split.split(r.get("aliases", "")) if a.strip()]}
                             for i, r in enumerate(norm) if r.get("name")]}
    raise Invalid("invalid_material", "a CSV needs the columns name, price, facts (products) or question, answer")


def check_material(data) -> dict:
    if not isinstance(data, dict):
        raise Invalid("invalid_material", "the material must be an object with products, qa and/or shop")
    check_tree(data, "material")  # its answers are spoken: no control characters reach the TTS (uploads too)
    products, qa, shop = data.get("products") or [], data.get("qa") or [], data.get("shop") or {}
    if not isinstance(products, list) or not isinstance(qa, list) or not isinstance(shop, dict):
        raise Invalid("invalid_material", "products and qa must be lists, shop an object")
    if len(products) + len(qa) > MAX_ITEMS:
        raise Invalid("material_too_large", f"{len(products) + len(qa)} items; the limit is {MAX_ITEMS}")
    for i, p in enumerate(products):
        if not isinstance(p, dict) or not _variants(p.get("name")):
            raise Invalid("invalid_material", f"product {i + 1} has no name")
    for i, item in enumerate(qa):
        if not isinstance(item, dict) or not _variants(item.get("q")) or not _variants(item.get("a")):
            raise Invalid("invalid_material", f"question/answer pair {i + 1} needs both q and a")
    if not (products or qa or shop):
        raise Invalid("invalid_material", "the material is empty: give products, qa or shop answers")
    unknown = set(shop) - set(SHOP_TOPICS)
    if unknown:
        raise Invalid("invalid_material", f"unknown shop topics {sorted(unknown)}; use {list(SHOP_TOPICS)}")
    return {"title": data.get("title"), "products": products, "qa": qa, "shop": shop}


def material_prompt(material: dict, language: str) -> str:
    """The material as text for an LLM's system prompt (the faq responder's fallback)."""
    lines = []
    for p in material.get("products") or []:
        facts = " ".join(text_in(f, language) for f in p.get("facts") or [])
        lines.append(f"- {text_in(p.get('name'), language)}: {text_in(p.get('price'), language)}. {facts}")
    for item in material.get("qa") or []:
        lines.append(f"- Q: {text_in(_variants(item.get('q'))[0], language)} A: {text_in(item.get('a'), language)}")
    for topic, answer in (material.get("shop") or {}).items():
        lines.append(f"- {topic}: {text_in(answer, language)}")
    return "Answer viewers only from this material; say so politely when it does not cover a question.\n" + \
        "\n".join(lines)
