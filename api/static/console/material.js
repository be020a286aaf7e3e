// The operator's material (what a `faq` room answers from), edited in the page: products with their
// price and facts, and question/answer pairs. The service's format (core/conversations/faq.py): any
// text may be a string or {zh, en}; the editor shows one language and keeps the other as it was, and
// keeps what it does not edit (the shop's standing answers, aliases, ids) untouched.

import { h } from "./dom.js";
import { t } from "./i18n.js";

/** The text of a material value in `lang` (or any other language it has). */
function textIn(value, lang) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    return String(value[lang] || Object.values(value).find((v) => v) || "");
  }
  return value === null || value === undefined ? "" : String(value);
}

/** A value edited in `lang`: the original when the text did not change, else that language replaced. */
function edited(original, text, lang) {
  if (textIn(original, lang) === text) return original;
  if (original && typeof original === "object" && !Array.isArray(original)) return { ...original, [lang]: text };
  return text;
}

function lines(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean);
}

/** Lines edited against a list of original values (kept where a line did not change). */
function editedList(originals, text, lang) {
  return lines(text).map((line, i) => edited((originals || [])[i], line, lang));
}

export class MaterialEditor {
  /** `root`: an element to fill; `onChange()`: called on every edit. */
  constructor(root, { onChange } = {}) {
    this.root = root;
    this.onChange = onChange || (() => {});
    this.lang = "zh";
    this.base = { products: [], qa: [], shop: {} };
    this.render();
  }

  /** Show `material` ({products, qa, shop, title}) in `lang`. */
  load(material, lang) {
    this.lang = lang || this.lang;
    this.base = JSON.parse(JSON.stringify(material || { products: [], qa: [], shop: {} }));
    this.base.products = this.base.products || [];
    this.base.qa = this.base.qa || [];
    this.render();
  }

  /** The material as edited now (the service checks it when it is saved). */
  value() {
    const lang = this.lang;
    const products = [...this.root.querySelectorAll(".mat-product")].map((row) => {
      const orig = this.base.products[Number(row.dataset.index)] || {};
      const get = (name) => row.querySelector(`[data-field=${name}]`).value.trim();
      return { ...orig, name: edited(orig.name, get("name"), lang), price: edited(orig.price, get("price"), lang),
        facts: editedList(orig.facts, get("facts"), lang) };
    }).filter((p) => textIn(p.name, lang) || textIn(p.price, lang) || p.facts.length);
    const qa = [...this.root.querySelectorAll(".mat-qa")].map((row) => {
      const orig = this.base.qa[Number(row.dataset.index)] || {};
      const get = (name) => row.querySelector(`[data-field=${name}]`).value.trim();
      return { ...orig, q: editedList(orig.q, get("q"), lang), a: edited(orig.a, get("a"), lang) };
    }).filter((item) => item.q.length || textIn(item.a, lang));
    const out = { products, qa, shop: this.base.shop || {} };
    if (this.base.title) out.title = this.base.title;
    return out;
  }

  isEmpty() {
    const v = this.value();
    return !v.products.length && !v.qa.length && !Object.keys(v.shop).length;
  }

  counts() {
    const v = this.value();
    return { products: v.products.length, qa: v.qa.length };
  }

  render() {
    const products = this.base.products.map((p, i) => this.productRow(p, i));
    const qa = this.base.qa.map((item, i) => this.qaRow(item, i));
    const shop = Object.keys(this.base.shop || {});
    this.productList = h("div", { class: "mat-list" }, products);
    this.qaList = h("div", { class: "mat-list" }, qa);
    this.root.replaceChildren(
      h("div", { class: "mat-head" }, h("b", {}, t("mat.products")),
        h("button", { type: "button", class: "mat-add", dataset: { add: "product" }, onclick: () => this.add("product") },
          t("mat.add_product"))),
      this.productList,
      h("div", { class: "mat-head" }, h("b", {}, t("mat.qa")),
        h("button", { type: "button", class: "mat-add", dataset: { add: "qa" }, onclick: () => this.add("qa") },
          t("mat.add_qa"))),
      this.qaList,
      shop.length ? h("p", { class: "muted hint" }, t("mat.shop_kept", { topics: shop.join(", ") })) : "");
  }

  add(kind) {
    const list = kind === "product" ? this.productList : this.qaList;
    const index = kind === "product" ? this.base.products.push({}) - 1 : this.base.qa.push({}) - 1;
    const row = kind === "product" ? this.productRow({}, index) : this.qaRow({}, index);
    list.append(row);
    row.querySelector("input, textarea").focus();
    this.onChange();
  }

  field(name, value, { multi = false, placeholder = "" } = {}) {
    const attrs = { dataset: { field: name }, placeholder: t(placeholder), "aria-label": t(placeholder),
      oninput: () => this.onChange() };
    const el = multi ? h("textarea", { ...attrs, rows: 2 }) : h("input", attrs);
    el.value = value;
    return el;
  }

  remover(row) {
    return h("button", { type: "button", class: "mat-remove danger", title: t("mat.remove"), "aria-label": t("mat.remove"),
      onclick: () => { row.remove(); this.onChange(); } }, "✕");
  }

  productRow(p, index) {
    const row = h("div", { class: "mat-row mat-product", dataset: { index } });
    const facts = (p.facts || []).map((f) => textIn(f, this.lang)).join("\n");
    row.append(
      h("div", { class: "mat-line" }, this.field("name", textIn(p.name, this.lang), { placeholder: "mat.name" }),
        this.field("price", textIn(p.price, this.lang), { placeholder: "mat.price" }), this.remover(row)),
      this.field("facts", facts, { multi: true, placeholder: "mat.facts" }));
    return row;
  }

  qaRow(item, index) {
    const row = h("div", { class: "mat-row mat-qa", dataset: { index } });
    const qs = (Array.isArray(item.q) ? item.q : item.q ? [item.q] : []).map((q) => textIn(q, this.lang)).join("\n");
    row.append(
      h("div", { class: "mat-line" }, this.field("q", qs, { multi: true, placeholder: "mat.q" }), this.remover(row)),
      this.field("a", textIn(item.a, this.lang), { multi: true, placeholder: "mat.a" }));
    return row;
  }
}
