// The public explorer: network totals and breakdowns, the device table (filters, order, cursor
// pages, search) and a device's page. Anonymous: it sends no credentials and shows nothing that
// identifies a person (the API's public types carry no owner). The URL's query string holds the
// whole table state, so any view can be shared.
import { gql } from './api.js';
import { el, clear, badge, label, num, time, errorNotice, loading } from './ui.js';
import { barChart } from './charts.js';

const PAGE = 25;
const STATUSES = ['UP', 'DOWN', 'PAUSED', 'QUARANTINED'];
const LEVELS = ['ATTESTED', 'SELF_REPORTED', 'PENDING', 'FLAGGED'];
// The API's orderBy allow-list (DeviceOrderField × OrderDirection).
const ORDERS = [
  ['CREATED_AT_DESC', 'Newest first'], ['CREATED_AT_ASC', 'Oldest first'],
  ['NAME_ASC', 'Name A–Z'], ['NAME_DESC', 'Name Z–A'],
  ['VERIFICATION_LEVEL_DESC', 'Strongest verification'], ['VERIFICATION_LEVEL_ASC', 'Weakest verification'],
];

const STATS = `query Stats { networkStats { devices gpus computedAt
  byStatus { status devices gpus } byGpuModel { model devices gpus } byRegion { region devices gpus }
  byVerificationLevel { level devices gpus } } }`;
const ROW = 'id name status region verificationLevel gpuModel gpuCount lastSeenAt createdAt';
const LIST = `query Devices($first: Int!, $after: String, $filter: DeviceFilter, $orderBy: DeviceOrder) {
  devices(first: $first, after: $after, filter: $filter, orderBy: $orderBy) { edges { node { ${ROW} } } pageInfo { hasNextPage endCursor } } }`;
const SEARCH = `query Search($query: String!, $first: Int!, $after: String) {
  searchDevices(query: $query, first: $first, after: $after) { edges { node { ${ROW} } } pageInfo { hasNextPage endCursor } } }`;
const DEVICE = `query Device($id: ID!) { device(id: $id) { ${ROW}
  gpus { index uuid model pciDeviceId memoryMiB architecture computeCapability verificationLevel } } }`;

const main = document.getElementById('main');

// --- state in the URL ---

function readState() {
  const p = new URLSearchParams(location.search);
  const order = ORDERS.some(([v]) => v === p.get('order')) ? p.get('order') : 'CREATED_AT_DESC';
  return {
    status: p.get('status') || '', model: p.get('model') || '', region: p.get('region') || '',
    level: p.get('level') || '', q: (p.get('q') || '').slice(0, 100), order,
    after: p.get('after') || '', prev: (p.get('prev') || '').split(' ').filter(Boolean).slice(-50),
  };
}

function stateURL(s) {
  const p = new URLSearchParams();
  for (const k of ['q', 'status', 'model', 'region', 'level']) if (s[k]) p.set(k, s[k]);
  if (s.order !== 'CREATED_AT_DESC') p.set('order', s.order);
  if (s.after) p.set('after', s.after);
  // The cursors of the pages before this one, so Previous works in a shared or reloaded URL.
  if (s.prev.length) p.set('prev', s.prev.join(' '));
  const q = p.toString();
  return '/' + (q ? '?' + q : '');
}

// searchProblem says why q cannot be searched (the API's minimums), or '' when it can.
function searchProblem(q) {
  const hex = q.replace(/-/g, '');
  if (/^[0-9a-fA-F]+$/.test(hex) && hex.length >= 4) return '';
  if ([...q].length >= 3) return '';
  return 'Type at least 3 characters of a name, or 4 hexadecimal digits of a device ID.';
}

// --- home: totals, charts, table ---

let state = readState();
let stats = null;
const ui = {};

function renderHome() {
  document.title = 'gpugate explorer';
  ui.stats = el('section', { 'aria-labelledby': 'h-net' }, el('h1', { id: 'h-net' }, 'Network'), loading('network totals'));
  ui.form = filterForm();
  ui.results = el('div', { id: 'results', 'aria-live': 'polite' });
  const devices = el('section', { 'aria-labelledby': 'h-dev' }, el('h2', { id: 'h-dev' }, 'Devices'), ui.form, ui.results);
  clear(main, ui.stats, devices);
  loadStats();
  loadTable();
}

async function loadStats() {
  try {
    stats = (await gql(STATS)).networkStats;
  } catch (err) {
    clear(ui.stats, el('h1', { id: 'h-net' }, 'Network'), errorNotice(err, loadStats));
    return;
  }
  const s = stats;
  const total = (n, l) => el('div', { class: 'total' }, el('span', { class: 'n' }, num(n)), el('span', { class: 'l' }, l));
  const up = s.byStatus.find((r) => r.status === 'UP');
  const attested = s.byVerificationLevel.find((r) => r.level === 'ATTESTED');
  clear(ui.stats,
    el('h1', { id: 'h-net' }, 'Network'),
    el('div', { class: 'totals' },
      total(s.devices, 'devices'), total(s.gpus, 'GPUs'), total(up ? up.gpus : 0, 'GPUs up'),
      total(attested ? attested.gpus : 0, 'GPUs attested')),
    el('div', { class: 'charts' },
      barChart('GPUs by model', s.byGpuModel.map((r) => ({ key: 'model', label: r.model.replace(/^NVIDIA /, ''), title: r.model, value: r.gpus })), { unit: 'GPUs' }),
      barChart('GPUs by region', s.byRegion.map((r) => ({ key: 'region', label: r.region, value: r.gpus })), { unit: 'GPUs' }),
      barChart('Devices by status', s.byStatus.map((r) => ({ key: r.status, label: label(r.status), value: r.devices }))),
      barChart('GPUs by verification level', s.byVerificationLevel.map((r) => ({ key: r.level, label: label(r.level), value: r.gpus })), { unit: 'GPUs' })),
    el('p', { class: 'computed' }, 'Totals computed ', time(s.computedAt), '.'));
  fillOptions();
  mark('gpugate:stats');
}

function select(name, text, options) {
  const id = 'f-' + name;
  return el('div', { class: 'field' }, el('label', { for: id }, text),
    el('select', { id, name }, options.map(([v, t]) => el('option', { value: v }, t))));
}

function filterForm() {
  const f = el('form', { class: 'filters', role: 'search', 'aria-label': 'Find devices' },
    el('div', { class: 'field grow' }, el('label', { for: 'f-q' }, 'Search by name or device ID'),
      el('input', { id: 'f-q', name: 'q', type: 'search', maxlength: 100, autocomplete: 'off', placeholder: 'e.g. gpu-amber or 3f2a' })),
    el('button', { type: 'submit' }, 'Search'),
    select('status', 'Status', [['', 'Any status'], ...STATUSES.map((v) => [v, label(v)])]),
    select('model', 'GPU model', [['', 'Any model']]),
    select('region', 'Region', [['', 'Any region']]),
    select('level', 'Verification', [['', 'Any level'], ...LEVELS.map((v) => [v, label(v)])]),
    select('order', 'Order', ORDERS),
    el('button', { type: 'button', class: 'secondary', id: 'f-reset', onclick: () => go({ ...blank() }) }, 'Clear'));
  f.addEventListener('submit', (e) => { e.preventDefault(); go({ ...fromForm(), after: '', prev: [] }); });
  f.addEventListener('change', (e) => { if (e.target.tagName === 'SELECT') go({ ...fromForm(), after: '', prev: [] }); });
  syncForm(f);
  return f;
}

function blank() {
  return { status: '', model: '', region: '', level: '', q: '', order: 'CREATED_AT_DESC', after: '', prev: [] };
}

function fromForm() {
  const d = new FormData(ui.form);
  return { q: String(d.get('q') || '').trim(), status: d.get('status') || '', model: d.get('model') || '',
    region: d.get('region') || '', level: d.get('level') || '', order: d.get('order') || 'CREATED_AT_DESC' };
}

function fillOptions() {
  if (!stats || !ui.form) return;
  const put = (name, values) => {
    const sel = ui.form.elements[name];
    const keep = sel.options[0];
    const vals = [...new Set(values)].sort();
    if (state[name] && !vals.includes(state[name])) vals.push(state[name]);
    sel.replaceChildren(keep, ...vals.map((v) => el('option', { value: v }, v)));
  };
  put('model', stats.byGpuModel.map((r) => r.model));
  put('region', stats.byRegion.map((r) => r.region));
  syncForm(ui.form);
}

function syncForm(f) {
  for (const k of ['q', 'status', 'model', 'region', 'level', 'order']) {
    const e = f.elements[k];
    if (e.tagName === 'SELECT' && state[k] && ![...e.options].some((o) => o.value === state[k])) {
      e.append(el('option', { value: state[k] }, state[k]));
    }
    e.value = state[k];
  }
}

function go(next) {
  state = { ...state, ...next };
  syncForm(ui.form); // a sort header or Clear changes what the form shows
  history.pushState(null, '', stateURL(state));
  loadTable();
}

window.addEventListener('popstate', () => {
  if (location.pathname !== '/') return route();
  state = readState();
  if (!ui.form || !ui.form.isConnected) return renderHome();
  syncForm(ui.form);
  loadTable();
});

let loadSeq = 0;

async function loadTable() {
  const seq = ++loadSeq;
  const s = state;
  ui.results.setAttribute('aria-busy', 'true');
  if (!ui.results.firstChild || ui.results.querySelector('.notice')) clear(ui.results, loading('devices'));
  let conn;
  try {
    if (s.q) {
      const problem = searchProblem(s.q);
      if (problem) {
        clear(ui.results, el('p', { class: 'notice warn', role: 'alert' }, problem));
        ui.results.removeAttribute('aria-busy');
        return;
      }
      conn = (await gql(SEARCH, { query: s.q, first: PAGE, after: s.after || null })).searchDevices;
    } else {
      const filter = {};
      if (s.status) filter.status = s.status;
      if (s.model) filter.gpuModel = s.model;
      if (s.region) filter.region = s.region;
      if (s.level) filter.verificationLevel = s.level;
      const i = s.order.lastIndexOf('_');
      const orderBy = { field: s.order.slice(0, i), direction: s.order.slice(i + 1) };
      conn = (await gql(LIST, { first: PAGE, after: s.after || null, filter, orderBy })).devices;
    }
  } catch (err) {
    if (seq !== loadSeq) return;
    clear(ui.results, errorNotice(err, loadTable));
    ui.results.removeAttribute('aria-busy');
    return;
  }
  if (seq !== loadSeq) return;
  renderTable(conn, s);
  ui.results.removeAttribute('aria-busy');
  mark('gpugate:devices');
}

function renderTable(conn, s) {
  const rows = conn.edges.map((e) => e.node);
  const pageNo = s.prev.length + 1;
  const caption = s.q ? `Devices matching “${s.q}”` + (hasFilters(s) ? ' (search ignores the filters and order)' : '') : 'Devices';
  const sorted = s.q ? 'name' : s.order;
  const aria = (field) => (s.q ? (field === 'NAME' ? 'ascending' : null)
    : sorted.startsWith(field + '_') ? (sorted.endsWith('_ASC') ? 'ascending' : 'descending') : null);
  const sortButton = (field, text) => {
    if (s.q) return text;
    const cur = s.order.startsWith(field + '_') ? s.order.slice(field.length + 1) : '';
    const nextDir = cur === 'DESC' ? 'ASC' : cur === 'ASC' ? 'DESC' : field === 'NAME' ? 'ASC' : 'DESC';
    return el('button', { type: 'button', class: 'secondary sort', 'data-order': field + '_' + nextDir,
      onclick: () => go({ order: field + '_' + nextDir, after: '', prev: [] }),
      'aria-label': `Sort by ${text}, ${nextDir === 'ASC' ? 'ascending' : 'descending'}` },
    text, cur ? (cur === 'ASC' ? ' ▲' : ' ▼') : '');
  };
  const table = rows.length === 0
    ? el('p', { class: 'notice empty', role: 'status' }, s.q || hasFilters(s) ? 'No device matches. Try fewer filters or another search.' : 'No devices in the network yet.')
    : el('div', { class: 'table-wrap' }, el('table', { id: 'devices' },
      el('caption', { class: 'sr-only' }, caption + `, page ${pageNo}`),
      el('thead', {}, el('tr', {},
        el('th', { scope: 'col', 'aria-sort': aria('NAME') }, sortButton('NAME', 'Name')),
        el('th', { scope: 'col', class: 'hide-phone' }, 'Device ID'),
        el('th', { scope: 'col' }, 'Status'),
        el('th', { scope: 'col' }, 'GPUs'),
        el('th', { scope: 'col', class: 'hide-phone' }, 'Region'),
        el('th', { scope: 'col', 'aria-sort': aria('VERIFICATION_LEVEL') }, sortButton('VERIFICATION_LEVEL', 'Verification')),
        el('th', { scope: 'col', class: 'hide-phone' }, 'Last seen'),
        el('th', { scope: 'col', class: 'hide-phone', 'aria-sort': aria('CREATED_AT') }, sortButton('CREATED_AT', 'Joined')))),
      el('tbody', {}, rows.map((d) => el('tr', { 'data-id': d.id },
        el('td', {}, el('a', { href: '/devices/' + encodeURIComponent(d.id) }, d.name)),
        el('td', { class: 'mono hide-phone' }, d.id.slice(0, 8)),
        el('td', {}, badge(d.status)),
        el('td', { title: d.gpuModel }, `${d.gpuCount} × ${d.gpuModel.replace(/^NVIDIA /, '')}`),
        el('td', { class: 'hide-phone' }, d.region),
        el('td', {}, badge(d.verificationLevel)),
        el('td', { class: 'hide-phone' }, time(d.lastSeenAt)),
        el('td', { class: 'hide-phone' }, time(d.createdAt)))))));
  const pager = el('nav', { class: 'pager', 'aria-label': 'Pages' },
    el('button', { type: 'button', class: 'secondary', id: 'p-first', disabled: pageNo === 1, onclick: () => go({ after: '', prev: [] }) }, '« First'),
    el('button', { type: 'button', class: 'secondary', id: 'p-prev', disabled: pageNo === 1,
      onclick: () => { const prev = s.prev.slice(0, -1); go({ after: s.prev[s.prev.length - 1] === '-' ? '' : s.prev[s.prev.length - 1], prev }); } }, '‹ Previous'),
    el('button', { type: 'button', class: 'secondary', id: 'p-next', disabled: !conn.pageInfo.hasNextPage,
      onclick: () => go({ after: conn.pageInfo.endCursor, prev: [...s.prev, s.after || '-'] }) }, 'Next ›'),
    el('span', { class: 'where' }, `Page ${pageNo}` + (rows.length ? ` · ${rows.length} shown` : '')));
  clear(ui.results, table, pager);
}

// mark records when a part of the page first showed its data (the browser tests read it).
function mark(name) {
  if (performance.getEntriesByName(name).length === 0) performance.mark(name);
}

function hasFilters(s) {
  return !!(s.status || s.model || s.region || s.level);
}

// --- a device's page ---

async function renderDevice(id) {
  clear(main, el('p', {}, el('a', { href: '/' }, '‹ All devices')), loading('the device'));
  let d;
  try {
    d = (await gql(DEVICE, { id })).device;
  } catch (err) {
    if (err.kind === 'not-found' || err.kind === 'input') {
      document.title = 'Device not found · gpugate';
      clear(main, el('p', {}, el('a', { href: '/' }, '‹ All devices')), el('h1', {}, 'Device not found'),
        el('p', { class: 'notice', role: 'alert' }, err.kind === 'input' ? 'This is not a device ID.' : 'No device has this ID, or it was removed from the network.'));
      return;
    }
    clear(main, el('p', {}, el('a', { href: '/' }, '‹ All devices')), errorNotice(err, () => renderDevice(id)));
    return;
  }
  document.title = d.name + ' · gpugate';
  const fact = (k, v) => [el('dt', {}, k), el('dd', {}, v)];
  clear(main,
    el('p', {}, el('a', { href: '/' }, '‹ All devices')),
    el('h1', {}, d.name),
    el('div', { class: 'cols' },
      el('section', { class: 'card', 'aria-label': 'Device facts' }, el('dl', { class: 'facts', id: 'facts' },
        fact('Device ID', el('span', { class: 'mono' }, d.id)),
        fact('Status', badge(d.status)),
        fact('Verification', badge(d.verificationLevel)),
        fact('GPUs', `${d.gpuCount} × ${d.gpuModel}`),
        fact('Region', d.region),
        fact('Last seen', time(d.lastSeenAt)),
        fact('Joined', time(d.createdAt))))),
    el('h2', {}, 'GPUs'),
    d.gpus.length === 0 ? el('p', { class: 'notice empty' }, 'No GPUs reported.')
      : el('div', { class: 'table-wrap' }, el('table', { id: 'gpus' },
        el('thead', {}, el('tr', {}, ['#', 'Model', 'Memory', 'Architecture', 'Compute', 'Verification', 'UUID'].map((h, i) =>
          el('th', { scope: 'col', class: i >= 3 && i !== 5 ? 'hide-phone' : null }, h)))),
        el('tbody', {}, d.gpus.map((g) => el('tr', {},
          el('td', { class: 'num' }, g.index), el('td', {}, g.model),
          el('td', {}, `${num(Math.round(g.memoryMiB / 1024))} GiB`),
          el('td', { class: 'hide-phone' }, g.architecture), el('td', { class: 'hide-phone' }, g.computeCapability),
          el('td', {}, badge(g.verificationLevel)), el('td', { class: 'mono hide-phone' }, g.uuid)))))));
}

function route() {
  const m = location.pathname.match(/^\/devices\/([^/]+)$/);
  if (m) return renderDevice(decodeURIComponent(m[1]));
  state = readState();
  renderHome();
}

route();
