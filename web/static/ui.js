// Small DOM helpers shared by the explorer and the console. Everything is built with
// createElement and textContent: no HTML strings, so API data cannot inject markup.

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  append(e, children);
  return e;
}

function append(e, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(e, ...children) {
  e.replaceChildren();
  append(e, children);
  return e;
}

const words = { UP: 'Up', DOWN: 'Down', PAUSED: 'Paused', QUARANTINED: 'Quarantined', PENDING: 'Pending',
  SELF_REPORTED: 'Self-reported', ATTESTED: 'Attested', FLAGGED: 'Flagged', PASSED: 'Passed' };

export const label = (v) => words[v] || v;

export function badge(v) {
  return el('span', { class: 'badge b-' + v }, label(v));
}

export function num(n) {
  return new Intl.NumberFormat('en').format(n);
}

export function ago(iso) {
  if (!iso) return 'never';
  const t = new Date(iso);
  const s = Math.round((Date.now() - t.getTime()) / 1000);
  if (s < 0) return t.toLocaleString();
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  if (s < 86400 * 30) return Math.round(s / 86400) + ' days ago';
  return t.toISOString().slice(0, 10);
}

export function time(iso) {
  if (!iso) return el('span', { class: 'muted' }, 'never');
  return el('time', { datetime: iso, title: new Date(iso).toISOString() }, ago(iso));
}

// errorNotice renders an ApiError (or any error) as a notice, with a retry button when retry is
// given; a busy gateway's Retry-After also retries once by itself when it is due.
export function errorNotice(err, retry) {
  const box = el('div', { class: 'notice error', role: 'alert' });
  let text = err?.message || String(err);
  switch (err?.kind) {
    case 'busy':
      box.className = 'notice warn';
      text += err.retryAfter ? ` Try again in ${err.retryAfter} s.` : ' Try again shortly.';
      break;
    case 'disabled':
      box.className = 'notice warn';
      text = err.message.replace(/\.?$/, '.') + ' This kind of write is switched off by an operator (DISABLED); reading keeps working.';
      break;
    case 'network':
      break;
  }
  box.append(el('span', {}, text));
  if (retry) {
    box.append(el('button', { type: 'button', class: 'secondary', onclick: retry }, 'Retry'));
    if (err?.kind === 'busy' && err.retryAfter > 0 && err.retryAfter <= 60) {
      const timer = setTimeout(() => { if (box.isConnected) retry(); }, err.retryAfter * 1000);
      box.addEventListener('click', () => clearTimeout(timer));
    }
  }
  return box;
}

export function loading(what) {
  return el('p', { class: 'notice', role: 'status' }, 'Loading ' + what + '…');
}
