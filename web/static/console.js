// The owner console. Sign-in is OAuth 2.0 authorization code + PKCE (S256) with the configured
// OpenID provider, as a public client whose redirect URI is this page. The access token lives
// only in this module's memory (never in storage or a cookie): a reload or a new tab signs in
// again. Only the one-time PKCE verifier and state cross the redirect, in sessionStorage, and
// are deleted when the code is exchanged. docs/web.md explains the choice.
import { gql, ApiError } from './api.js';
import { el, clear, badge, label, time, errorNotice, loading } from './ui.js';

const meta = (n) => document.querySelector(`meta[name="gpugate-${n}"]`)?.content || '';
const cfg = { issuer: meta('issuer').replace(/\/$/, ''), clientId: meta('client-id'), scopes: meta('scopes') || 'openid', audience: meta('audience'),
  rolesClaim: meta('roles-claim'), adminRole: meta('admin-role') };
const redirectURI = location.origin + '/console/';
const PKCE_KEY = 'gpugate.console.pkce';

const main = document.getElementById('main');
const who = document.getElementById('who');

let session = null; // { token, expiresAt, name, admin }

// --- OAuth 2.0 authorization code + PKCE ---

function b64url(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function random(n) {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

async function discovery() {
  let resp;
  try {
    resp = await fetch(cfg.issuer + '/.well-known/openid-configuration', { credentials: 'omit' });
  } catch (e) {
    throw new ApiError('network', 'The sign-in provider could not be reached (' + cfg.issuer + ').');
  }
  if (!resp.ok) throw new ApiError('network', `The sign-in provider answered HTTP ${resp.status} for its discovery document.`);
  return resp.json();
}

async function signIn() {
  const d = await discovery();
  const verifier = random(32);
  const challenge = b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
  const state = random(16);
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({ state, verifier, tokenEndpoint: d.token_endpoint, at: Date.now() }));
  const p = new URLSearchParams({
    response_type: 'code', client_id: cfg.clientId, redirect_uri: redirectURI, scope: cfg.scopes,
    state, code_challenge: challenge, code_challenge_method: 'S256',
  });
  if (cfg.audience) p.set('audience', cfg.audience);
  location.assign(d.authorization_endpoint + '?' + p.toString());
}

// finishSignIn exchanges the code of the redirect back to this page for tokens.
async function finishSignIn(params) {
  history.replaceState(null, '', '/console/'); // the code is single-use; keep it out of history
  const saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) || 'null');
  sessionStorage.removeItem(PKCE_KEY);
  if (params.get('error')) {
    throw new ApiError('auth', `Sign-in failed: ${params.get('error')}${params.get('error_description') ? ' (' + params.get('error_description') + ')' : ''}.`);
  }
  if (!saved || saved.state !== params.get('state') || Date.now() - saved.at > 10 * 60 * 1000) {
    throw new ApiError('auth', 'This sign-in response does not belong to a sign-in started here (or it is too old). Sign in again.');
  }
  let resp;
  try {
    resp = await fetch(saved.tokenEndpoint, {
      method: 'POST', credentials: 'omit',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: params.get('code'), redirect_uri: redirectURI, client_id: cfg.clientId, code_verifier: saved.verifier }),
    });
  } catch (e) {
    throw new ApiError('network', 'The sign-in provider could not be reached to finish signing in.');
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok || !body.access_token) {
    throw new ApiError('auth', 'The sign-in provider refused the code: ' + (body.error_description || body.error || 'HTTP ' + resp.status) + '.');
  }
  return { token: body.access_token, expiresAt: Date.now() + (Number(body.expires_in) || 3600) * 1000, admin: mayBeAdmin(body.access_token) };
}

// mayBeAdmin reads the roles claim of a JWT access token, only to decide whether to show the
// admin tools (the API decides what the caller may do). For a token it cannot read it returns
// null: the console then offers the admin tools behind a button instead of asking the API on
// every sign-in (a refused admin query is an audited denial).
function mayBeAdmin(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part + '='.repeat((4 - part.length % 4) % 4)));
    const roles = claims[cfg.rolesClaim];
    if (!cfg.rolesClaim || roles === undefined) return null;
    return Array.isArray(roles) ? roles.includes(cfg.adminRole) : roles === cfg.adminRole;
  } catch (e) {
    return null;
  }
}

function signOut() {
  session = null; // the only copy of the token
  clear(who);
  clear(main, el('h1', {}, 'Owner console'), el('p', { class: 'notice ok', role: 'status', id: 'signed-out' }, 'You are signed out. The access token was discarded.'),
    el('button', { type: 'button', id: 'sign-in', onclick: start }, 'Sign in'));
}

// api runs an operation as the signed-in user; an expired session asks to sign in again.
async function api(query, vars) {
  if (!session || Date.now() > session.expiresAt) {
    signedOutNotice('Your session expired. Sign in again.');
    throw new ApiError('auth', 'Your session expired. Sign in again.');
  }
  try {
    return await gql(query, vars, session.token);
  } catch (err) {
    if (err.kind === 'auth') signedOutNotice('The API no longer accepts your sign-in. Sign in again.');
    throw err;
  }
}

function signedOutNotice(text) {
  session = null;
  clear(who);
  clear(main, el('h1', {}, 'Owner console'), el('p', { class: 'notice warn', role: 'alert' }, text),
    el('button', { type: 'button', id: 'sign-in', onclick: start }, 'Sign in'));
}

// --- queries ---

const DEV = 'id name status region verificationLevel gpuModel gpuCount lastSeenAt createdAt private { labels paused quarantineReason hostname }';
const MINE = `query Mine($after: String) { viewer { displayName devices(first: 50, after: $after) { edges { node { ${DEV} } } pageInfo { hasNextPage endCursor } } } }`;
// Each proof's per-GPU evidence is left out: 50 proofs × 64 GPUs would exceed the cost limit.
const DETAIL = `query Detail($id: ID!) { device(id: $id) { ${DEV} gpus { index model uuid verificationLevel }
  private { labels paused quarantineReason hostname ipAddress enrolledAt
    credentials { id fingerprint createdAt lastUsedAt revokedAt }
    attestations { id verdict reasons level createdAt } } } }`;
const UPDATE = `mutation Update($id: ID!, $input: UpdateDeviceInput!) { updateDevice(id: $id, input: $input) { id name private { labels } } }`;
const PAUSE = `mutation Pause($id: ID!) { pauseDevice(id: $id) { id status } }`;
const RESUME = `mutation Resume($id: ID!) { resumeDevice(id: $id) { id status } }`;
const REMOVE = `mutation Remove($id: ID!) { removeDevice(id: $id) { id } }`;
const ENROLL = `mutation Enroll { createEnrollmentToken { token expiresAt } }`;
const SWITCHES = `query Switches { writeSwitches { class enabled reason changedAt changedBy } }`;
const DISABLE = `mutation Disable($class: WriteClass!, $reason: String!) { disableWrites(class: $class, reason: $reason) { class enabled } }`;
const ENABLE = `mutation Enable($class: WriteClass!) { enableWrites(class: $class) { class enabled } }`;
const AUDIT = `query Audit($after: String) { auditEvents(first: 25, after: $after) { nodes { id at principal operation target outcome reason } pageInfo { hasNextPage endCursor } } }`;
const QUARANTINE = `mutation Quarantine($id: ID!, $reason: String!) { quarantineDevice(id: $id, reason: $reason) { id status } }`;
const RELEASE = `mutation Release($id: ID!) { releaseDevice(id: $id) { id status } }`;

// --- the signed-in console ---

const ui = {};

async function showConsole() {
  clear(who, el('span', { id: 'who-name' }, session.name ? 'Signed in as ' + session.name : 'Signed in'),
    el('button', { type: 'button', id: 'sign-out', onclick: signOut }, 'Sign out'));
  ui.flash = el('div', { id: 'flash', 'aria-live': 'polite' });
  ui.list = el('section', { 'aria-labelledby': 'h-mine' }, el('h1', { id: 'h-mine' }, 'My devices'), loading('your devices'));
  ui.detail = el('section', { id: 'detail', 'aria-live': 'polite' });
  ui.enroll = enrollSection();
  ui.admin = el('div', { id: 'admin' });
  clear(main, ui.flash, ui.list, ui.detail, ui.enroll, ui.admin);
  await loadMine();
  if (session.admin === true) loadAdmin();
  else if (session.admin === null) {
    clear(ui.admin, el('button', { type: 'button', class: 'secondary', id: 'show-admin', onclick: loadAdmin }, 'Admin tools'));
  }
}

function flash(text, kind = 'ok') {
  clear(ui.flash, el('p', { class: 'notice ' + kind, role: 'status' }, text));
}

function failed(err, retry) {
  clear(ui.flash, errorNotice(err, retry));
}

async function loadMine() {
  let v;
  try {
    v = (await api(MINE, {})).viewer;
  } catch (err) {
    if (session) clear(ui.list, el('h1', { id: 'h-mine' }, 'My devices'), errorNotice(err, loadMine));
    return;
  }
  if (!session.name) {
    session.name = v.displayName;
    document.getElementById('who-name').textContent = 'Signed in as ' + v.displayName;
  }
  const rows = v.devices.edges.map((e) => e.node);
  clear(ui.list, el('h1', { id: 'h-mine' }, 'My devices'),
    rows.length === 0 ? el('p', { class: 'notice empty' }, 'You have no devices yet. Create an enrollment token below and run the worker on your GPU host.')
      : el('div', { class: 'table-wrap' }, el('table', { id: 'mine' },
        el('thead', {}, el('tr', {}, ['Name', 'Status', 'GPUs', 'Labels', 'Verification', 'Last seen', ''].map((h) => el('th', { scope: 'col' }, h)))),
        el('tbody', {}, rows.map((d) => el('tr', { 'data-id': d.id },
          el('td', {}, d.name, el('div', { class: 'muted mono' }, d.private?.hostname || '')),
          el('td', {}, badge(d.status)),
          el('td', {}, `${d.gpuCount} × ${d.gpuModel}`),
          el('td', {}, (d.private?.labels || []).join(', ')),
          el('td', {}, badge(d.verificationLevel)),
          el('td', {}, time(d.lastSeenAt)),
          el('td', {}, el('button', { type: 'button', class: 'secondary manage', 'aria-label': 'Manage ' + d.name, onclick: () => loadDetail(d.id) }, 'Manage'))))))),
    v.devices.pageInfo.hasNextPage ? el('p', { class: 'muted' }, 'Showing your 50 newest devices.') : null);
}

async function loadDetail(id) {
  clear(ui.detail, loading('the device'));
  let d;
  try {
    d = (await api(DETAIL, { id })).device;
  } catch (err) {
    clear(ui.detail, errorNotice(err, () => loadDetail(id)));
    return;
  }
  const p = d.private;
  const nameInput = el('input', { id: 'd-name', name: 'name', type: 'text', maxlength: 64, required: true, value: d.name });
  const labelsInput = el('input', { id: 'd-labels', name: 'labels', type: 'text', value: p.labels.join(', '), 'aria-describedby': 'd-labels-help' });
  const form = el('form', { class: 'inline-form', id: 'rename' },
    el('div', { class: 'field grow' }, el('label', { for: 'd-name' }, 'Public name'), nameInput),
    el('div', { class: 'field grow' }, el('label', { for: 'd-labels' }, 'Labels (only you see them)'), labelsInput,
      el('small', { id: 'd-labels-help', class: 'muted' }, 'Comma-separated, at most 16.')),
    el('button', { type: 'submit' }, 'Save'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const labels = labelsInput.value.split(',').map((s) => s.trim()).filter(Boolean);
    await act(() => api(UPDATE, { id, input: { name: nameInput.value.trim(), labels } }), 'Saved.', id);
  });
  const removeBox = el('div', { class: 'actions' });
  const askRemove = () => clear(removeBox,
    el('span', { role: 'alert' }, 'Remove this device from the network? Its worker keys stop working at once. '),
    el('button', { type: 'button', class: 'danger', id: 'confirm-remove', onclick: () => act(() => api(REMOVE, { id }), 'Removed.', null) }, 'Remove for good'),
    el('button', { type: 'button', class: 'secondary', onclick: () => clear(removeBox) }, 'Cancel'));
  clear(ui.detail,
    el('h2', { id: 'h-detail' }, d.name),
    p.quarantineReason ? el('p', { class: 'notice error', role: 'alert' }, 'Quarantined by an administrator: ' + p.quarantineReason) : null,
    el('dl', { class: 'facts card' },
      el('dt', {}, 'Device ID'), el('dd', { class: 'mono' }, d.id),
      el('dt', {}, 'Status'), el('dd', {}, badge(d.status)),
      el('dt', {}, 'Verification'), el('dd', {}, badge(d.verificationLevel)),
      el('dt', {}, 'Host'), el('dd', {}, p.hostname, p.ipAddress ? ' · ' + p.ipAddress : ''),
      el('dt', {}, 'Region'), el('dd', {}, d.region),
      el('dt', {}, 'Enrolled'), el('dd', {}, time(p.enrolledAt))),
    el('h3', {}, 'Name and labels'), form,
    el('div', { class: 'actions' },
      p.paused
        ? el('button', { type: 'button', id: 'resume', onclick: () => act(() => api(RESUME, { id }), 'Resumed: the device is offered again.', id) }, 'Resume')
        : el('button', { type: 'button', class: 'secondary', id: 'pause', onclick: () => act(() => api(PAUSE, { id }), 'Paused: the device shows PAUSED until resumed.', id) }, 'Pause'),
      el('button', { type: 'button', class: 'secondary', id: 'remove', onclick: askRemove }, 'Remove…')),
    removeBox,
    el('h3', {}, 'Worker keys'),
    p.credentials.length === 0 ? el('p', { class: 'muted' }, 'No keys.') : el('div', { class: 'table-wrap' }, el('table', { id: 'keys' },
      el('thead', {}, el('tr', {}, ['Fingerprint (SHA-256)', 'Added', 'Last used', 'Revoked'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, p.credentials.map((c) => el('tr', {},
        el('td', { class: 'mono' }, c.fingerprint.slice(0, 16) + '…'), el('td', {}, time(c.createdAt)),
        el('td', {}, time(c.lastUsedAt)), el('td', {}, c.revokedAt ? time(c.revokedAt) : 'no')))))),
    el('h3', {}, 'Attestation history'),
    p.attestations.length === 0 ? el('p', { class: 'muted' }, 'No proofs yet.') : el('div', { class: 'table-wrap' }, el('table', { id: 'attestations' },
      el('thead', {}, el('tr', {}, ['When', 'Verdict', 'Level', 'Why it was flagged'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, p.attestations.map((a) => el('tr', {},
        el('td', {}, time(a.createdAt)), el('td', {}, badge(a.verdict)), el('td', {}, badge(a.level)),
        el('td', {}, a.reasons.length ? el('ul', { class: 'reasons' }, a.reasons.map((r) => el('li', { class: 'mono' }, r))) : '—')))))));
  document.getElementById('h-detail').scrollIntoView?.({ block: 'start' });
}

// act runs a write, reports its outcome and reloads what it changed.
async function act(run, done, reloadId) {
  try {
    await run();
  } catch (err) {
    failed(err);
    return;
  }
  flash(done);
  await loadMine();
  if (reloadId) await loadDetail(reloadId); else clear(ui.detail);
}

function enrollSection() {
  const out = el('div', { id: 'enroll-out' });
  return el('section', { 'aria-labelledby': 'h-enroll' }, el('h2', { id: 'h-enroll' }, 'Add a device'),
    el('p', {}, 'An enrollment token lets one new GPU host join under your account. It is shown once and is valid 15 minutes.'),
    el('button', { type: 'button', id: 'create-token', onclick: async () => {
      let t;
      try {
        t = (await api(ENROLL, {})).createEnrollmentToken;
      } catch (err) {
        clear(out, errorNotice(err));
        return;
      }
      const cmd = `gpugate worker --server ${location.origin} --enroll ${t.token} --key-file worker-key.json`;
      const code = el('code', { id: 'worker-command' }, cmd);
      const copy = el('button', { type: 'button', class: 'secondary', id: 'copy-command', onclick: async () => {
        try {
          await navigator.clipboard.writeText(cmd);
          copy.textContent = 'Copied';
        } catch (e) {
          const r = document.createRange(); r.selectNodeContents(code);
          getSelection().removeAllRanges(); getSelection().addRange(r);
          copy.textContent = 'Selected: press Ctrl+C';
        }
      } }, 'Copy');
      clear(out, el('p', {}, 'Run this on the GPU host (expires ', time(t.expiresAt).textContent === 'never' ? '' : new Date(t.expiresAt).toLocaleTimeString(), '):'),
        el('div', { class: 'copy' }, code, copy));
    } }, 'Create enrollment token'), out);
}

// --- admin ---

async function loadAdmin() {
  let sw;
  try {
    sw = (await api(SWITCHES, {})).writeSwitches;
  } catch (err) {
    if (err.kind === 'forbidden') { // not an admin
      clear(ui.admin, el('p', { class: 'muted' }, 'The admin tools need the administrator role.'));
      return;
    }
    clear(ui.admin, el('h2', {}, 'Administration'), errorNotice(err, loadAdmin));
    return;
  }
  const reason = el('input', { id: 'switch-reason', type: 'text', maxlength: 200, placeholder: 'why (shown to callers)' });
  const qid = el('input', { id: 'q-id', type: 'text', placeholder: 'device ID', class: 'mono' });
  const qreason = el('input', { id: 'q-reason', type: 'text', maxlength: 200, placeholder: 'reason (shown to the owner)' });
  ui.audit = el('div', { id: 'audit' }, loading('the audit log'));
  clear(ui.admin, el('h2', {}, 'Administration'),
    el('h3', {}, 'Kill switches'),
    el('div', { class: 'field grow' }, el('label', { for: 'switch-reason' }, 'Reason for disabling'), reason),
    el('div', { class: 'table-wrap' }, el('table', { id: 'switches' },
      el('thead', {}, el('tr', {}, ['Write class', 'State', 'Reason', 'Changed', ''].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, sw.map((s) => el('tr', { 'data-class': s.class },
        el('td', { class: 'mono' }, s.class), el('td', {}, s.enabled ? 'accepting writes' : el('strong', {}, 'DISABLED')),
        el('td', {}, s.reason || ''), el('td', {}, s.changedAt ? [time(s.changedAt), ' by ', s.changedBy || '?'] : '—'),
        el('td', {}, s.enabled
          ? el('button', { type: 'button', class: 'danger', onclick: () => admin(() => api(DISABLE, { class: s.class, reason: reason.value.trim() || 'disabled from the console' }), `${s.class} writes disabled.`) }, 'Disable')
          : el('button', { type: 'button', onclick: () => admin(() => api(ENABLE, { class: s.class }), `${s.class} writes enabled.`) }, 'Enable'))))))),
    el('h3', {}, 'Quarantine'),
    el('form', { class: 'inline-form', id: 'quarantine', onsubmit: (e) => {
      e.preventDefault();
      const action = e.submitter?.value;
      if (action === 'release') admin(() => api(RELEASE, { id: qid.value.trim() }), 'Released.', false);
      else admin(() => api(QUARANTINE, { id: qid.value.trim(), reason: qreason.value.trim() }), 'Quarantined.', false);
    } },
    el('div', { class: 'field grow' }, el('label', { for: 'q-id' }, 'Device ID'), qid),
    el('div', { class: 'field grow' }, el('label', { for: 'q-reason' }, 'Reason'), qreason),
    el('button', { type: 'submit', class: 'danger', value: 'quarantine' }, 'Quarantine'),
    el('button', { type: 'submit', class: 'secondary', value: 'release' }, 'Release')),
    el('h3', {}, 'Audit log'), ui.audit);
  loadAudit('', []);
}

// admin runs an admin write and reloads the admin views (all of them, or, keeping the
// quarantine form's input, the audit log and the device list).
async function admin(run, done, all = true) {
  try {
    await run();
  } catch (err) {
    failed(err);
    return;
  }
  flash(done);
  if (all) return loadAdmin();
  loadAudit('', []);
  loadMine();
}

async function loadAudit(after, stack) {
  let conn;
  try {
    conn = (await api(AUDIT, { after: after || null })).auditEvents;
  } catch (err) {
    clear(ui.audit, errorNotice(err, () => loadAudit(after, stack)));
    return;
  }
  clear(ui.audit,
    conn.nodes.length === 0 ? el('p', { class: 'muted' }, 'No events.') : el('div', { class: 'table-wrap' }, el('table', { id: 'audit-table' },
      el('thead', {}, el('tr', {}, ['When', 'Who', 'Operation', 'Target', 'Outcome', 'Reason'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, conn.nodes.map((a) => el('tr', {},
        el('td', {}, time(a.at)), el('td', { class: 'mono' }, a.principal), el('td', { class: 'mono' }, a.operation),
        el('td', { class: 'mono' }, a.target || ''), el('td', {}, a.outcome), el('td', { class: 'mono' }, a.reason || '')))))),
    el('div', { class: 'pager' },
      el('button', { type: 'button', class: 'secondary', disabled: stack.length === 0, onclick: () => loadAudit(stack[stack.length - 1], stack.slice(0, -1)) }, '‹ Newer'),
      el('button', { type: 'button', class: 'secondary', disabled: !conn.pageInfo.hasNextPage, onclick: () => loadAudit(conn.pageInfo.endCursor, [...stack, after]) }, 'Older ›')));
}

// --- start ---

function start() {
  signIn().catch((err) => clear(main, el('h1', {}, 'Owner console'), errorNotice(err, start)));
}

async function boot() {
  if (!cfg.issuer || !cfg.clientId) {
    clear(main, el('h1', {}, 'Owner console'), el('p', { class: 'notice warn', role: 'status' },
      'Sign-in is not configured on this gateway (no OIDC issuer or console client ID). The public explorer works without it.'));
    return;
  }
  const params = new URLSearchParams(location.search);
  if (params.has('code') || params.has('error')) {
    clear(main, loading('your sign-in'));
    try {
      session = await finishSignIn(params);
    } catch (err) {
      clear(main, el('h1', {}, 'Owner console'), errorNotice(err), el('button', { type: 'button', id: 'sign-in', onclick: start }, 'Sign in'));
      return;
    }
    await showConsole();
    return;
  }
  clear(main, el('h1', {}, 'Owner console'),
    el('p', {}, 'Manage your GPU devices: rename, pause, remove, enroll new hosts, and see their keys and proofs.'),
    el('button', { type: 'button', id: 'sign-in', onclick: start }, 'Sign in'),
    el('p', { class: 'muted' }, 'You sign in with ', el('span', { class: 'mono' }, cfg.issuer), '. The console keeps your access token in this tab’s memory only: reloading the page signs you out.'));
}

boot();
