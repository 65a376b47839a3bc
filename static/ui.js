// Small DOM and formatting helpers for the Message Center.

/** Creates an element: h('a', {href, class, onclick}, ...children). Text is never parsed as HTML. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c == null || c === '') continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** "+15551234567" → "(555) 123-4567"; other countries keep E.164 with a space after the code. */
export function formatPhone(e164) {
  if (!e164) return '';
  const m = /^\+1(\d{3})(\d{3})(\d{4})$/.exec(e164);
  if (m) return `(${m[1]}) ${m[2]}-${m[3]}`;
  return e164;
}

/** Today: "10:04"; earlier: "Nov 23, 10:04"; `long` adds the year. */
export function formatTime(iso, long = false) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const now = new Date();
  const time = d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  if (!long && d.toDateString() === now.toDateString()) return time;
  const date = d.toLocaleDateString(undefined, { month: 'short', day: 'numeric', ...(long ? { year: 'numeric' } : {}) });
  return `${date}, ${time}`;
}

export function imageAttachments(message) {
  return (message?.attachments || []).filter((a) => (a.content_type || '').startsWith('image/'));
}

/** What a list row shows for a message: its text, and the attachments note when it has photos. */
export function messageSummary(message) {
  const parts = [];
  if (message?.body) parts.push({ kind: 'body', text: message.body });
  const n = imageAttachments(message).length;
  if (n) parts.push({ kind: 'attachments-note', text: `<Attachments (${n}) - double-click row to view image>` });
  else if ((message?.attachments || []).length) parts.push({ kind: 'attachments-note', text: `<Attachments (${message.attachments.length})>` });
  if (!parts.length) parts.push({ kind: 'body', text: '' });
  return parts;
}
