// Building the page from data: DOM APIs and text nodes only. Every string a citizen wrote (posts,
// handles, addresses, photo URLs) is attacker-controlled, so nothing here ever parses HTML
// (no innerHTML, insertAdjacentHTML or document.write), and a URL is linked only if it is http(s).

/** An element: h("a", {href: url, class: "x"}, "text", otherNode). Attributes named on* are
 * listeners (functions only); true/false/null toggle or skip an attribute. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) {
      if (typeof value !== "function") throw new TypeError(`${name} must be a function`);
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "href" || name === "src") {
      const url = safeUrl(value);
      if (url) el.setAttribute(name, url);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children (nested arrays too): nodes as they are, anything else as text. */
export function append(el, ...children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces an element's content. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A URL the console may link to or load: an absolute http(s) URL, or one of the console's own
 * hash routes; anything else (javascript:, data:, relative paths) is null. */
export function safeUrl(value) {
  const text = String(value ?? "");
  if (text.startsWith("#")) return text;
  try {
    const url = new URL(text);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

/** Says something to screen readers (and sets the visible status line, when there is one). */
export function announce(text) {
  const region = document.getElementById("announce");
  region.textContent = "";
  // a change the live region notices, even when the same text is said twice
  setTimeout(() => {
    region.textContent = text;
  }, 30);
}
