// Interface text in the operator's language: one catalogue per language (i18n/en.js, i18n/zh.js),
// chosen from the browser's languages unless the operator picked one (kept in localStorage).
// Markup names its strings: data-i18n (text), data-i18n-placeholder, data-i18n-title, data-i18n-aria.

import en from "./i18n/en.js";
import zh from "./i18n/zh.js";

const CATALOGUES = { en, zh };
const STORE = "mtl.lang";
export const LANGUAGES = Object.keys(CATALOGUES);

function fromBrowser() {
  for (const l of navigator.languages || [navigator.language || "en"]) {
    const base = String(l).toLowerCase().split("-")[0];
    if (CATALOGUES[base]) return base;
  }
  return "en";
}

function initial() {
  const forced = new URLSearchParams(location.search).get("lang");  // links and screenshots
  if (CATALOGUES[forced]) return forced;
  let kept = null;
  try { kept = localStorage.getItem(STORE); } catch (e) { /* storage disabled */ }
  return CATALOGUES[kept] ? kept : fromBrowser();
}

let current = initial();

export function lang() { return current; }

export function has(key) { return key in CATALOGUES[current] || key in en; }

/** A string by key, with {name} placeholders filled from vars; English, then the key, when missing. */
export function t(key, vars = {}) {
  const text = CATALOGUES[current][key] ?? en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

/** Fill every marked element under root with the current language's text. */
export function applyI18n(root = document) {
  document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
}

/** Switch language (remembered in this browser); listeners of "mtl:lang" redraw their dynamic text. */
export function setLang(name) {
  if (!CATALOGUES[name]) return;
  current = name;
  try { localStorage.setItem(STORE, name); } catch (e) { /* storage disabled */ }
  applyI18n();
  window.dispatchEvent(new CustomEvent("mtl:lang", { detail: name }));
}

/** A <select> that switches the language. */
export function bindLanguageSelect(select) {
  select.replaceChildren(...LANGUAGES.map((l) => {
    const o = document.createElement("option");
    o.value = l;
    o.textContent = CATALOGUES[l]["lang.name"];
    return o;
  }));
  select.value = current;
  select.addEventListener("change", () => setLang(select.value));
}
