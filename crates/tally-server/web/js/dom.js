// Small DOM helpers so the views read as markup without a framework or
// innerHTML (text is always set as text, never parsed as HTML), plus the
// app-wide toast for messages that outlive a view.

/**
 * Creates an element. `attrs`: `class`, `text`, `on` ({event: fn}),
 * `dataset`, booleans (true sets, false/null omits) and plain attributes.
 */
export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith('svg:');
  const el = svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === 'text') el.textContent = value;
    else if (key === 'on') for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Shows a short message in the live region; errors stay longer. */
export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const item = h('p', { class: `toast toast-${kind}`, text: message });
  box.append(item);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => item.remove(), kind === 'error' ? 6000 : 3500);
}

/** "3 min ago" style relative time, with the full date for the title. */
export function timeAgo(iso) {
  const then = new Date(iso);
  const secs = Math.max(0, (Date.now() - then.getTime()) / 1000);
  let text;
  if (secs < 45) text = 'just now';
  else if (secs < 3600) text = `${Math.round(secs / 60)} min ago`;
  else if (secs < 86400) text = `${Math.round(secs / 3600)} h ago`;
  else text = then.toLocaleDateString(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
  return h('time', { datetime: iso, title: then.toLocaleString(), text });
}

/** The main heading of a view: focusable so route changes can move focus to it. */
export function heading(text, cls = '') {
  return h('h1', { tabindex: '-1', class: cls || null, text });
}
