// Horizontal bar charts as inline SVG, drawn by hand. Colours come from app.css classes
// (s-<value>), since the CSP admits no inline styles.

const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function short(s, n) {
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

// barChart returns a <figure> with one bar per row ({key, label, value, detail}), longest
// first, at most max rows (the rest summed as "other").
export function barChart(title, rows, { max = 8, unit = 'devices' } = {}) {
  rows = [...rows].sort((a, b) => b.value - a.value);
  if (rows.length > max) {
    const rest = rows.slice(max - 1);
    rows = rows.slice(0, max - 1);
    rows.push({ key: 'other', label: `${rest.length} others`, value: rest.reduce((s, r) => s + r.value, 0) });
  }
  const fig = document.createElement('figure');
  fig.className = 'chart';
  const cap = document.createElement('figcaption');
  cap.textContent = title;
  fig.append(cap);
  const rowH = 24, labelW = 132, valueW = 52, width = 360;
  const height = Math.max(rows.length, 1) * rowH;
  const top = Math.max(1, ...rows.map((r) => r.value));
  const desc = rows.map((r) => `${r.title || r.label}: ${r.value} ${unit}`).join('; ');
  const s = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `${title}. ${desc || 'no data'}` });
  s.append(svg('title', {}, title));
  if (rows.length === 0) {
    s.append(svg('text', { x: 0, y: 16 }, 'No data yet'));
  }
  rows.forEach((r, i) => {
    const y = i * rowH;
    const barMax = width - labelW - valueW;
    const w = Math.max(r.value > 0 ? 2 : 0, Math.round((r.value / top) * barMax));
    const g = svg('g', { 'data-key': r.key });
    g.append(svg('title', {}, `${r.title || r.label}: ${new Intl.NumberFormat('en').format(r.value)} ${unit}`));
    g.append(svg('text', { x: 0, y: y + 16 }, short(r.label, 18)));
    g.append(svg('rect', { class: 'track', x: labelW, y: y + 5, width: barMax, height: 14, rx: 3 }));
    g.append(svg('rect', { class: 'bar s-' + r.key, x: labelW, y: y + 5, width: w, height: 14, rx: 3 }));
    g.append(svg('text', { class: 'v', x: labelW + barMax + 6, y: y + 16 }, new Intl.NumberFormat('en').format(r.value)));
    s.append(g);
  });
  fig.append(s);
  return fig;
}
