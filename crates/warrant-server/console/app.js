// The warrant console: a view over the admin API (/console/api/v1, the same
// handlers and roles as /admin/v1), signed in with a session cookie.
//
// Nothing here builds HTML from text: every value reaches the page through
// textContent or an attribute, so a name or argument recorded by an agent
// cannot become markup. No inline script or style anywhere (the page's CSP
// forbids both).

const API = '/console/api/v1';
const main = document.getElementById('main');
const statusBox = document.getElementById('status');
const errorBox = document.getElementById('error');
const nav = document.getElementById('nav');
const whoBox = document.getElementById('who');

let me = null; // { actor, role, person, csrf, expires_at, idle_timeout_seconds }
let sso = false; // whether single sign-on is offered (the broker says so when nobody is signed in)
let leaving = []; // what the current page must stop when another is drawn

const mayChange = () => me && me.role === 'admin';
const mayApprove = () => me && (me.role === 'admin' || me.role === 'approver');

// ---- DOM helpers ---------------------------------------------------------

function h(tag, attrs, ...kids) {
  const el = document.createElementNS(
    ['svg', 'g', 'path', 'circle', 'rect', 'line', 'polyline', 'text', 'title'].includes(tag)
      ? 'http://www.w3.org/2000/svg' : 'http://www.w3.org/1999/xhtml', tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function link(href, text, attrs) {
  return h('a', { href, ...(attrs || {}) }, text);
}

function time(t) {
  if (!t) return '–';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return h('time', { datetime: d.toISOString(), title: d.toISOString() },
    d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z'));
}

function ago(t) {
  if (!t) return 'never';
  const s = Math.round((Date.now() - new Date(t).getTime()) / 1000);
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

// A decision, in words and with a shape, never by colour alone.
function verdict(d) {
  const sign = { allow: '✓', deny: '✗', pending: '…', error: '!' }[d] || '?';
  return h('span', { class: `verdict verdict-${d}` }, h('span', { 'aria-hidden': 'true' }, sign + ' '), String(d).toUpperCase());
}

function table(caption, headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty || 'Nothing to show.');
  return h('div', { class: 'scroll', role: 'region', 'aria-label': caption, tabindex: '0' },
    h('table', {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows)));
}

function pretty(v) {
  return h('pre', { class: 'json' }, JSON.stringify(v, null, 2));
}

function say(text) {
  statusBox.textContent = text;
}

function fail(err) {
  errorBox.hidden = false;
  errorBox.textContent = err instanceof ApiError ? `${err.message} (${err.status} ${err.code})` : `Error: ${err.message || err}`;
  errorBox.focus?.();
}

function clearError() {
  errorBox.hidden = true;
  errorBox.textContent = '';
}

// ---- the API -------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, url, body) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && me) headers['x-warrant-csrf'] = me.csrf;
  let resp;
  try {
    resp = await fetch(url, {
      method, headers, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'unreachable', 'The broker did not answer; is it running?');
  }
  if (resp.status === 204) return null;
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (resp.headers.get('x-warrant-sso') === 'oidc') sso = true;
  if (!resp.ok) {
    const message = (data && data.message) || `The broker answered ${resp.status}.`;
    const err = new ApiError(resp.status, (data && data.error) || 'error', message);
    if (resp.status === 401 && url !== '/console/session') {
      me = null;
      signIn('Your session has ended: ' + message);
    }
    throw err;
  }
  return data;
}

const api = (method, path, body) => call(method, API + path, body);

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? '?' + s : '';
}

// ---- navigation ----------------------------------------------------------

const pages = [
  [/^\/console\/?$/, overview, 'Overview'],
  [/^\/console\/agents\/?$/, agents, 'Agents'],
  [/^\/console\/audit\/?$/, audit, 'Live audit'],
  [/^\/console\/txn\/([^/]+)$/, transaction, 'Transaction'],
  [/^\/console\/approvals\/?$/, approvals, 'Approvals'],
  [/^\/console\/approvals\/([^/]+)$/, approval, 'Approval'],
  [/^\/console\/policies\/?$/, policies, 'Policies'],
  [/^\/console\/secrets\/?$/, secrets, 'Secrets and tools'],
];

function go(url) {
  history.pushState(null, '', url);
  draw(true);
}

document.addEventListener('click', (e) => {
  const a = e.target.closest && e.target.closest('a[href]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const url = new URL(a.href, location.href);
  // Sign-in through the provider leaves the page: a real navigation.
  if (url.origin !== location.origin || !url.pathname.startsWith('/console') || url.pathname.startsWith('/console/oidc/') || a.target) return;
  e.preventDefault();
  go(url.pathname + url.search);
});
window.addEventListener('popstate', () => draw(true));

function page(title, ...kids) {
  document.title = `${title} · warrant console`;
  main.replaceChildren(h('h1', { tabindex: '-1' }, title), ...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));
  for (const a of nav.querySelectorAll('a')) {
    const here = new URL(a.href).pathname.replace(/\/$/, '') === location.pathname.replace(/\/$/, '')
      || (a.getAttribute('href') !== '/console/' && location.pathname.startsWith(a.getAttribute('href')));
    if (here) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
}

function section(title, ...kids) {
  return h('section', { 'aria-label': title }, h('h2', {}, title), ...kids);
}

// Draws the page the address names. After a navigation inside the console
// the new page's heading takes the focus (a screen reader announces it); on
// a fresh load the focus stays at the top, where the skip link is.
async function draw(moved) {
  for (const stop of leaving) stop();
  leaving = [];
  clearError();
  say('');
  const refused = new URLSearchParams(location.search).get('error');
  if (!me) {
    try {
      me = await call('GET', '/console/session');
    } catch (e) {
      if (e.status === 401) return signIn(location.pathname.startsWith('/console/signin') ? (Object.hasOwn(SSO_ERRORS, refused || '') ? SSO_ERRORS[refused] : (refused ? 'Single sign-on failed.' : undefined)) : undefined);
      page('The console cannot start');
      return fail(e);
    }
  }
  showWho();
  if (location.pathname.startsWith('/console/signin')) {
    history.replaceState(null, '', '/console/');
  }
  const path = location.pathname;
  const found = pages.find(([re]) => re.test(path));
  if (!found) {
    page('Not found', h('p', {}, 'No console page is at this address. ', link('/console/', 'Go to the overview.')));
    return;
  }
  const [re, fn, title] = found;
  let args;
  try {
    args = path.match(re).slice(1).map(decodeURIComponent);
  } catch (e) {
    page('Not found', h('p', {}, 'This address is not well formed. ', link('/console/', 'Go to the overview.')));
    return;
  }
  page(title, h('p', { class: 'loading' }, 'Loading…'));
  try {
    await fn(...args);
  } catch (e) {
    if (e.status !== 401) fail(e);
  }
  if (moved) main.querySelector('h1')?.focus({ preventScroll: true });
}

function showWho() {
  nav.hidden = false;
  const expires = new Date(me.expires_at);
  whoBox.replaceChildren(
    h('span', {}, 'Signed in as ', h('strong', {}, me.person || me.actor), ` (role ${me.role})`),
    h('span', { class: 'expiry' }, ` · session ends ${expires.toISOString().slice(11, 16)} UTC`),
    ' ',
    h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'));
}

// ---- sign-in -------------------------------------------------------------

// Why single sign-on sent the person back, by the code the broker gives.
const SSO_ERRORS = {
  state: 'Single sign-on failed: the sign-in did not start in this browser, or was used already. Try again.',
  expired: 'Single sign-on took too long. Try again.',
  denied: 'The identity provider did not sign you in.',
  token: 'The identity provider\'s answer could not be verified. The broker\'s audit trail says why.',
  no_role: 'You signed in, but none of your groups gives a role in this console. Ask an administrator.',
  unavailable: 'Single sign-on is unavailable right now; the broker\'s log says why. Sign in with an admin token instead.',
};

function signIn(message) {
  for (const stop of leaving) stop();
  leaving = [];
  nav.hidden = true;
  whoBox.replaceChildren();
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false', 'aria-describedby': 'token-help' });
  const form = h('form', { class: 'signin', onsubmit: async (e) => {
    e.preventDefault();
    clearError();
    try {
      me = await call('POST', '/console/session', { token: input.value });
      input.value = '';
      const back = location.pathname.startsWith('/console/signin') ? '/console/' : location.pathname + location.search;
      go(back);
    } catch (err) {
      fail(err);
      input.focus();
    }
  } },
  h('label', { for: 'token' }, 'Admin token'),
  input,
  h('p', { id: 'token-help', class: 'help' }, 'An admin token from ', h('code', {}, 'warrant admin-token create --role auditor|approver|admin'),
    '. Its role decides what you may do here; it is exchanged for a session cookie and not kept by the page.'),
  h('button', { type: 'submit' }, 'Sign in'));
  const single = sso ? h('p', { class: 'sso' }, h('a', { href: '/console/oidc/start', class: 'button', 'data-sso': 'oidc' }, 'Sign in with single sign-on'), ' or with an admin token:') : null;
  document.title = 'Sign in · warrant console';
  main.replaceChildren(h('h1', { tabindex: '-1' }, 'Sign in to warrant'), ...(message ? [h('p', { class: 'notice', role: 'alert' }, message)] : []), ...(single ? [single] : []), form);
  input.focus();
}

async function signOut() {
  try {
    await call('DELETE', '/console/session');
  } catch (e) { /* the session is gone either way */ }
  me = null;
  history.pushState(null, '', '/console/signin');
  signIn('You have signed out.');
}

// ---- actions -------------------------------------------------------------

// A button for a change: disabled (with the reason said) when the role may
// not make it. The server refuses it anyway; this only saves a round trip.
function action(label, allowed, need, run, attrs) {
  const note = allowed ? undefined : `Your role (${me.role}) may not do this; it needs ${need}.`;
  return h('button', {
    type: 'button', disabled: !allowed, title: note, 'aria-disabled': allowed ? undefined : 'true',
    'data-action': label.toLowerCase(),
    ...(attrs || {}),
    onclick: async (e) => {
      const b = e.currentTarget;
      b.disabled = true;
      clearError();
      try {
        await run();
      } catch (err) {
        fail(err);
      } finally {
        b.disabled = !allowed;
      }
    },
  }, label);
}

// ---- charts --------------------------------------------------------------

function sparkline(label, values, format) {
  const w = 160, hgt = 36;
  const nums = values.filter((v) => typeof v === 'number');
  const last = nums.length ? nums[nums.length - 1] : null;
  const lo = Math.min(...nums, 0), hi = Math.max(...nums, 1e-9);
  const pts = values.map((v, i) => (typeof v === 'number'
    ? `${(values.length < 2 ? w : (i * w) / (values.length - 1)).toFixed(1)},${(hgt - 2 - ((v - lo) / (hi - lo || 1)) * (hgt - 4)).toFixed(1)}` : null)).filter(Boolean);
  const desc = nums.length
    ? `${label}: now ${format(last)}, lowest ${format(Math.min(...nums))}, highest ${format(Math.max(...nums))}, over ${nums.length} samples`
    : `${label}: no samples yet`;
  return h('svg', { class: 'spark', viewBox: `0 0 ${w} ${hgt}`, role: 'img', 'aria-label': desc },
    h('title', {}, desc),
    pts.length > 1 ? h('polyline', { points: pts.join(' ') }) : null,
    pts.length ? h('circle', { cx: pts[pts.length - 1].split(',')[0], cy: pts[pts.length - 1].split(',')[1], r: 3 }) : null);
}

const pct = (v) => (typeof v === 'number' ? `${Math.round(v * 100)}%` : '–');
const num = (v) => (typeof v === 'number' ? String(v) : '–');

// ---- overview ------------------------------------------------------------

async function overview() {
  const [health, history, pending, denials, anomalies] = await Promise.all([
    api('GET', '/health'),
    api('GET', '/health/history'),
    api('GET', '/approvals?state=pending&limit=20'),
    api('GET', '/audit?decision=deny&limit=10'),
    api('GET', '/anomalies'),
  ]);
  const pts = history.points;
  const series = (k) => pts.map((p) => p[k]);
  const card = (label, value, key, format, note) => h('div', { class: 'card' },
    h('h3', {}, label),
    h('p', { class: 'figure' }, value),
    sparkline(label, series(key), format),
    note ? h('p', { class: 'help' }, note) : null);
  const cards = h('div', { class: 'cards' },
    card('Standing secrets', num(health.secrets.stored), 'secrets_stored', num, `${health.secrets.unused_30d.length} unused for 30 days`),
    card('Minted per use', pct(health.upstream.ephemeral_share), 'ephemeral_share', pct, 'share of upstream requests'),
    card('Acting for a user', pct(health.grants.delegated_share), 'delegated_share', pct, 'share of task tokens'),
    card('Live instances', num(health.instances_alive), 'instances_alive', num),
    card('Pending approvals', num(health.approvals.pending), 'approvals_pending', num),
    card('Quarantined agents', num(health.agents.quarantined), 'agents_quarantined', num, `${health.agents.active} active, ${health.agents.disabled} disabled`));
  const pendingRows = pending.map((a) => h('tr', {},
    h('td', {}, link(`/console/approvals/${encodeURIComponent(a.id)}`, a.id)),
    h('td', {}, a.subject.agent),
    h('td', {}, a.subject.user || 'itself'),
    h('td', {}, `${a.subject.action} ${a.subject.resource}`),
    h('td', {}, time(a.expires_at))));
  const denialRows = denials.records.slice().reverse().map(recordRow);
  const anomalyRows = anomalies.map((a) => h('tr', {},
    h('td', {}, link(`/console/audit${query({ agent: a.agent })}`, a.agent)),
    h('td', {}, String(a.score))));
  page('Overview',
    section('Identity health', cards,
      h('p', { class: 'help' }, `Sampled every ${history.interval_seconds}s; ${pts.length} samples kept. `, link('/console/secrets', 'Secrets and their rotation'), '.')),
    section('Pending approvals', table('Requests waiting for a person', ['Approval', 'Agent', 'For', 'What', 'Expires'], pendingRows, 'No request is waiting for approval.')),
    section('Recent denials', table('The last refused requests', ['#', 'Time', 'Event', 'Decision', 'Agent', 'User', 'Transaction', 'Why'], denialRows, 'Nothing was refused recently.')),
    section('Anomalies', table('Agents behaving unlike themselves', ['Agent', 'Score (0–100)'], anomalyRows, 'No agent has an anomaly score.')));
}

// ---- agents --------------------------------------------------------------

async function agents() {
  const [list, discovered] = await Promise.all([api('GET', '/agents'), api('GET', '/discovered')]);
  const instances = await Promise.all(list.slice(0, 200).map((a) => api('GET', `/agents/${encodeURIComponent(a.name)}/instances`).catch(() => null)));
  const now = Date.now();
  const rows = list.map((a, i) => {
    const inst = instances[i];
    const alive = inst ? inst.filter((x) => new Date(x.expires_at).getTime() > now) : null;
    const last = inst && inst.length ? inst.map((x) => x.last_seen).sort().pop() : null;
    const change = (label, path) => action(label, mayChange(), 'role admin', async () => {
            const updated = await api('POST', `/agents/${encodeURIComponent(a.name)}/${path}`);
      await agents();
      say(`Agent ${a.name} is now ${updated.status}.`);
    });
    const buttons = [];
    if (a.status === 'active') buttons.push(change('Disable', 'disable'), change('Quarantine', 'quarantine'));
    if (a.status === 'disabled') buttons.push(change('Enable', 'enable'));
    if (a.status === 'quarantined') buttons.push(change('Release', 'release'));
    return h('tr', { 'data-agent': a.name },
      h('th', { scope: 'row' }, link(`/console/audit${query({ agent: a.name })}`, a.name)),
      h('td', {}, h('span', { class: `state state-${a.status}` }, a.status)),
      h('td', {}, a.trust),
      h('td', {}, a.owner),
      h('td', {}, a.env),
      h('td', {}, h('ul', { class: 'plain' }, (a.selectors || []).map((s) => h('li', {}, h('code', {}, s))))),
      h('td', {}, alive ? String(alive.length) : '–'),
      h('td', {}, last ? ago(last) : 'never'),
      h('td', { class: 'actions' }, buttons));
  });
  const found = discovered.map((c) => h('tr', {},
    h('th', { scope: 'row' }, c.suggested_name),
    h('td', {}, c.attestor),
    h('td', {}, h('ul', { class: 'plain' }, c.selectors.map((s) => h('li', {}, h('code', {}, s))))),
    h('td', {}, String(c.attempts)),
    h('td', {}, ago(c.last_seen)),
    h('td', {}, action('Register', mayChange(), 'role admin', async () => registerForm(c)))));
  page('Agents',
    section('Inventory', table('Registered agents', ['Name', 'State', 'Trust', 'Owner', 'Environment', 'Selectors', 'Live instances', 'Last seen', 'Actions'], rows, 'No agent is registered yet. Register one below or with `warrant agent create`.')),
    section('Discovered workloads', h('p', { class: 'help' }, 'Processes that tried to attest and matched no agent, from the audit trail of the last 30 days.'),
      table('Unregistered workloads', ['Suggested name', 'Attestor', 'Selectors it would satisfy', 'Attempts', 'Last tried', ''], found, 'No unregistered workload tried to attest.')),
    h('div', { id: 'register' }));
}

function registerForm(c) {
  const field = (id, label, value, help) => [
    h('label', { for: id }, label),
    h('input', { id, name: id, value: value || '', required: true, 'aria-describedby': help ? `${id}-help` : undefined }),
    help ? h('p', { id: `${id}-help`, class: 'help' }, help) : null];
  const boxes = c.selectors.map((s, i) => h('li', {},
    h('input', { type: 'checkbox', id: `sel-${i}`, value: s, checked: true }),
    h('label', { for: `sel-${i}` }, h('code', {}, s))));
  const trust = h('select', { id: 'reg-trust', name: 'trust' }, ['low', 'medium', 'high'].map((t) => h('option', { value: t }, t)));
  const form = h('form', { class: 'register', onsubmit: async (e) => {
    e.preventDefault();
    clearError();
    const v = (id) => form.querySelector(`#${id}`).value.trim();
    const selectors = [...form.querySelectorAll('input[type=checkbox]:checked')].map((b) => b.value);
    try {
            const a = await api('POST', '/agents', { name: v('reg-name'), owner: v('reg-owner'), env: v('reg-env'), trust: trust.value, selectors });
      await agents();
      say(`Agent ${a.name} registered.`);
    } catch (err) { fail(err); }
  } },
  h('h2', {}, `Register ${c.suggested_name}`),
  field('reg-name', 'Name', c.suggested_name),
  field('reg-owner', 'Owner', me.person ? me.person.replace(/^user:[^/]*\//, '') : '', 'Who answers for this agent (a team or a person).'),
  field('reg-env', 'Environment', '', 'Where it runs, such as prod or staging.'),
  h('label', { for: 'reg-trust' }, 'Trust'), trust,
  h('fieldset', {}, h('legend', {}, 'Selectors its instances must prove'), h('ul', { class: 'plain' }, boxes)),
  h('button', { type: 'submit' }, 'Create agent'));
  document.getElementById('register').replaceChildren(form);
  form.querySelector('#reg-owner').focus();
}

// ---- audit ---------------------------------------------------------------

const FILTERS = ['agent', 'user', 'event', 'decision', 'task', 'txn'];

function recordRow(r) {
  const detail = h('details', {}, h('summary', {}, `#${r.seq}`), pretty(r));
  return h('tr', { 'data-seq': r.seq, class: `rec rec-${r.decision}` },
    h('td', {}, detail),
    h('td', {}, time(r.time)),
    h('td', {}, h('code', {}, r.event)),
    h('td', {}, verdict(r.decision)),
    h('td', {}, r.agent ? link(`/console/audit${query({ agent: r.agent })}`, r.agent) : '–'),
    h('td', {}, r.user || '–'),
    h('td', {}, r.txn ? link(`/console/txn/${encodeURIComponent(r.txn)}`, r.txn) : '–'),
    h('td', { class: 'why' }, (r.reasons || []).join('; ')));
}

async function audit() {
  const params = new URLSearchParams(location.search);
  const filters = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || '']));
  const inputs = FILTERS.map((k) => (k === 'decision'
    ? h('div', { class: 'field' }, h('label', { for: `f-${k}` }, 'Decision'),
      h('select', { id: `f-${k}`, name: k }, ['', 'allow', 'deny', 'pending', 'error'].map((d) => h('option', { value: d, selected: filters[k] === d }, d || 'any'))))
    : h('div', { class: 'field' }, h('label', { for: `f-${k}` }, k === 'txn' ? 'Transaction' : k[0].toUpperCase() + k.slice(1)),
      h('input', { id: `f-${k}`, name: k, value: filters[k], autocomplete: 'off' }))));
  const form = h('form', { class: 'filters', role: 'search', onsubmit: (e) => {
    e.preventDefault();
    const q = {};
    for (const k of FILTERS) q[k] = form.elements[k].value.trim();
    go('/console/audit' + query(q));
  } }, inputs, h('button', { type: 'submit' }, 'Apply filters'));
  const recent = await api('GET', '/audit' + query({ ...filters, limit: '50' }));
  const body = h('tbody', {}, recent.records.slice().reverse().map(recordRow));
  const live = h('p', { class: 'live', id: 'live-state' }, 'Connecting to the live stream…');
  page('Live audit', form, live,
    h('div', { class: 'scroll', role: 'region', 'aria-label': 'Audit records', tabindex: '0' },
      h('table', { id: 'records' },
        h('caption', {}, 'Audit records, newest first; new ones appear as they are committed'),
        h('thead', {}, h('tr', {}, ['#', 'Time', 'Event', 'Decision', 'Agent', 'User', 'Transaction', 'Why'].map((x) => h('th', { scope: 'col' }, x)))),
        body)));
  let after = recent.records.length ? recent.records[recent.records.length - 1].seq : undefined;
  const source = new EventSource(`${API}/audit/stream${query({ ...filters, after: after === undefined ? '' : String(after) })}`);
  source.addEventListener('open', () => { live.textContent = 'Live: new records appear as they are committed.'; });
  source.addEventListener('error', () => { live.textContent = 'Live stream interrupted; reconnecting…'; });
  source.addEventListener('record', (e) => {
    const r = JSON.parse(e.data);
    if (body.querySelector(`tr[data-seq="${r.seq}"]`)) return;
    body.prepend(recordRow(r));
    while (body.children.length > 500) body.lastChild.remove();
  });
  leaving.push(() => source.close());
}

// ---- transaction ---------------------------------------------------------

const REQUEST_EVENTS = /^(proxy\.request|mcp\.|token\.|approval\.)/;

async function transaction(id) {
  const t = await api('GET', `/audit/trace/${encodeURIComponent(id)}`);
  const user = t.tasks.length ? t.tasks[0].subject : '–';
  // Nodes: the user, each task (with its agent), each record of a task.
  const nodes = [];
  const edges = [];
  nodes.push({ id: 'user', kind: 'user', label: user, depth: 0 });
  const byTask = new Map();
  const place = (parent, depth) => {
    for (const task of t.tasks.filter((x) => (x.parent || null) === parent)) {
      const n = { id: task.task, kind: 'task', task, label: `${task.agent} · ${task.task}`, depth: depth + 1, revoked: !!task.revoked_at };
      nodes.push(n);
      byTask.set(task.task, n);
      edges.push([parent || 'user', task.task]);
      place(task.task, depth + 1);
    }
  };
  place(null, 0);
  const records = t.records.filter((r) => r.task && byTask.has(r.task));
  const maxTask = Math.max(0, ...[...byTask.values()].map((n) => n.depth));
  for (const r of records) {
    const n = { id: `r${r.seq}`, kind: 'record', record: r, label: `#${r.seq} ${r.event}`, depth: maxTask + 1 };
    nodes.push(n);
    edges.push([r.task, n.id]);
  }
  const loose = t.records.filter((r) => !r.task || !byTask.has(r.task));

  // Layered drawing: one column per depth.
  const colW = 230, rowH = 46, boxW = 210, boxH = 34;
  const cols = new Map();
  for (const n of nodes) {
    const c = cols.get(n.depth) || [];
    n.row = c.length;
    c.push(n);
    cols.set(n.depth, c);
  }
  const rowsMax = Math.max(...[...cols.values()].map((c) => c.length));
  const width = (maxTask + 2) * colW + 20, height = rowsMax * rowH + 20;
  const pos = (n) => [10 + n.depth * colW, 10 + n.row * rowH];
  const find = new Map(nodes.map((n) => [n.id, n]));
  const svg = h('svg', { class: 'graph', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-labelledby': 'graph-title' },
    h('title', { id: 'graph-title' }, `Delegation graph of transaction ${t.txn}: ${byTask.size} tasks, ${records.length} requests`),
    edges.map(([a, b]) => {
      const [x1, y1] = pos(find.get(a));
      const [x2, y2] = pos(find.get(b));
      return h('path', { class: 'edge', d: `M${x1 + boxW},${y1 + boxH / 2} C${x1 + boxW + 12},${y1 + boxH / 2} ${x2 - 12},${y2 + boxH / 2} ${x2},${y2 + boxH / 2}` });
    }),
    nodes.map((n) => {
      const [x, y] = pos(n);
      const d = n.record ? n.record.decision : (n.revoked ? 'revoked' : n.kind);
      const text = n.label.length > 30 ? n.label.slice(0, 29) + '…' : n.label;
      return h('g', { class: `node node-${n.kind} node-${d}`, 'data-node': n.id },
        h('title', {}, n.record ? `${n.label}: ${n.record.decision} ${(n.record.reasons || []).join('; ')}` : n.label),
        h('rect', { x, y, width: boxW, height: boxH, rx: 5 }),
        h('text', { x: x + 8, y: y + 21 }, (n.record ? `${n.record.decision.toUpperCase()} ` : n.revoked ? 'REVOKED ' : '') + text));
    }));

  // The same tree as a list: what a screen reader (and the test) reads.
  const recordItem = (r) => h('li', { 'data-seq': r.seq },
    `#${r.seq} `, h('code', {}, r.event), ' ', verdict(r.decision),
    r.resource ? [' ', h('span', { class: 'resource' }, r.resource)] : null,
    (r.reasons || []).length ? [' — ', h('span', { class: 'why' }, r.reasons.join('; '))] : null);
  const taskItem = (task) => h('li', { 'data-task': task.task },
    h('strong', {}, task.agent), ` task ${task.task}`, task.parent ? '' : ' (root)',
    ` · scope "${task.scope}" · for ${task.audience.join(', ')} · `,
    task.revoked_at ? h('span', { class: 'state state-revoked' }, 'revoked ', time(task.revoked_at)) : ['expires ', time(task.expires_at)],
    ' ',
    task.revoked_at ? null : action('Revoke task', mayChange(), 'role admin', async () => {
            await api('POST', '/revoke', { kind: 'task', id: task.task });
      await transaction(id);
      say(`Task ${task.task} and every task under it are revoked.`);
    }),
    h('ul', {},
      t.records.filter((r) => r.task === task.task).map(recordItem),
      t.tasks.filter((x) => x.parent === task.task).map(taskItem)));
  const tree = h('ul', { class: 'tree', id: 'tree' },
    h('li', {}, 'User ', h('strong', {}, user),
      h('ul', {}, t.tasks.filter((x) => !x.parent).map(taskItem))));
  page(`Transaction ${t.txn}`,
    h('p', {}, action('Revoke the whole transaction', mayChange(), 'role admin', async () => {
            await api('POST', '/revoke', { kind: 'txn', id: t.txn });
      await transaction(id);
      say(`Every task of ${t.txn} is revoked.`);
    }), ' ', link(`/console/audit${query({ txn: t.txn })}`, 'Follow this transaction live')),
    section('Graph', h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': 'Delegation graph' }, svg)),
    section('Tree', tree),
    loose.length ? section('Refused or outside a task', h('ul', { id: 'loose' }, loose.map(recordItem))) : null);
}

// ---- approvals -----------------------------------------------------------

function who(a) {
  const s = a.subject;
  return `${s.agent}${s.instance ? ` (${s.instance})` : ''} for ${s.user || 'itself'}`;
}

async function approvals() {
  const params = new URLSearchParams(location.search);
  const state = params.get('state') || 'pending';
  const list = await api('GET', `/approvals${query({ state, limit: '200' })}`);
  const choose = h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); go('/console/approvals' + query({ state: choose.elements.state.value })); } },
    h('div', { class: 'field' }, h('label', { for: 'a-state' }, 'Show'),
      h('select', { id: 'a-state', name: 'state' }, ['pending', 'approved', 'denied', 'used', 'expired', 'all'].map((s) => h('option', { value: s, selected: s === state }, s)))),
    h('button', { type: 'submit' }, 'Show'));
  const rows = list.map((a) => h('tr', {},
    h('th', { scope: 'row' }, link(`/console/approvals/${encodeURIComponent(a.id)}`, a.id)),
    h('td', {}, a.state),
    h('td', {}, who(a)),
    h('td', {}, `${a.subject.action} ${a.subject.resource}`),
    h('td', {}, (a.policies || []).join(', ')),
    h('td', {}, a.role),
    h('td', {}, time(a.created_at)),
    h('td', {}, time(a.expires_at))));
  page('Approvals', choose, table(`Approvals (${state})`, ['Approval', 'State', 'Who asks, for whom', 'Kind', 'Policies', 'Needs role', 'Asked', 'Expires'], rows, `No ${state === 'all' ? '' : state + ' '}approval.`));
}

async function approval(id) {
  const a = await api('GET', `/approvals/${encodeURIComponent(id)}`);
  const s = a.subject;
  const req = s.request || {};
  const facts = [
    ['State', a.state], ['Asks for', `${s.action} on ${s.resource}`], ['Agent', s.agent], ['Instance', s.instance], ['For user', s.user || 'the agent itself'],
    ['Chain', (s.chain || []).join(' → ')], ['Task', s.task], ['Transaction', s.txn],
    ['Asked by policies', (a.policies || []).join(', ')], ['Needs role', a.role],
    ['Asked', time(a.created_at)], ['Expires', time(a.expires_at)],
    ['Decided by', a.decided_by], ['Reason', a.reason],
  ].filter(([, v]) => v);
  const reason = h('textarea', { id: 'reason', name: 'reason', maxlength: '500', rows: '2' });
  const decide = (verb) => action(verb === 'approve' ? 'Approve' : 'Deny', mayApprove(), 'role approver or admin', async () => {
        await api('POST', `/approvals/${encodeURIComponent(a.id)}/${verb}`, { reason: reason.value.trim() || null });
    await approval(id);
    say(`Approval ${a.id} ${verb === 'approve' ? 'approved' : 'denied'}.`);
  });
  page(`Approval ${a.id}`,
    h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    section('The exact request', h('p', { class: 'help' }, 'An approval covers this one request only: the same tool and arguments, or the same method, path, query and body.'),
      h('dl', { class: 'facts', id: 'request' }, Object.entries(req).map(([k, v]) => [h('dt', {}, k), h('dd', {}, typeof v === 'string' ? h('code', {}, v) : pretty(v))])),
      a.shown && a.shown !== null ? [h('h3', {}, 'What the agent sent'), pretty(a.shown)] : null),
    a.state === 'pending' ? section('Decide',
      h('label', { for: 'reason' }, 'Reason (recorded in the audit trail)'), reason,
      h('p', { class: 'buttons' }, decide('approve'), ' ', decide('deny'))) : null);
}

// ---- policies ------------------------------------------------------------

async function policies() {
  const [status, source, agentList] = await Promise.all([api('GET', '/policy'), api('GET', '/policy/source'), api('GET', '/agents')]);
  const out = h('div', { id: 'whatif-answer', 'aria-live': 'polite' });
  const field = (id, label, attrs, help) => h('div', { class: 'field' },
    h('label', { for: id }, label),
    attrs.rows ? h('textarea', { id, name: id, ...attrs }) : h('input', { id, name: id, autocomplete: 'off', ...attrs }),
    help ? h('p', { class: 'help' }, help) : null);
  const form = h('form', { class: 'whatif', onsubmit: async (e) => {
    e.preventDefault();
    clearError();
    const v = (k) => form.elements[k].value.trim();
    const parse = (k) => {
      const text = v(k);
      if (!text) return undefined;
      try { return JSON.parse(text); } catch (err) { throw new Error(`${k === 'w-args' ? 'Arguments' : 'Context'} is not JSON: ${err.message}`); }
    };
    try {
      const body = { agent: v('w-agent'), action: v('w-action'), resource: v('w-resource') };
      if (v('w-user')) body.user = v('w-user');
      if (v('w-scopes')) body.scopes = v('w-scopes').split(/\s+/);
      const ctx = parse('w-context');
      if (ctx) Object.assign(body, ctx);
      const args = parse('w-args');
      if (args) body.arguments = args;
      const r = await api('POST', '/policy/check', body);
      const deciding = r.decision.policies || [];
      const shown = { allow: 'allow', deny: 'deny', approval_required: 'pending' }[r.effect] || 'error';
      out.replaceChildren(...[h('p', { class: 'answer', id: 'whatif-verdict', 'data-effect': r.effect }, verdict(shown),
        r.effect === 'approval_required' ? ' (allowed once a person approves)' : '',
        ' ', deciding.length ? `decided by ${deciding.join(', ')}` : 'no policy applies: denied by default'),
      (r.decision.errors || []).length ? h('ul', {}, r.decision.errors.map((x) => h('li', {}, x))) : null].filter(Boolean));
    } catch (err) { fail(err); }
  } },
  field('w-agent', 'Principal (agent)', { list: 'agent-names', required: true }),
  h('datalist', { id: 'agent-names' }, agentList.map((a) => h('option', { value: a.name }))),
  field('w-action', 'Action', { required: true, placeholder: 'mcp:call_tool' }, 'Such as token:exchange, http:request or mcp:call_tool.'),
  field('w-resource', 'Resource', { required: true, placeholder: 'Tool::"github/create_issue"' }),
  field('w-user', 'For user', { placeholder: 'dev/alice' }),
  field('w-scopes', 'Scopes', { placeholder: 'issues:write' }, 'Separated by spaces.'),
  field('w-context', 'Context (JSON)', { rows: 3, placeholder: '{"depth": 1, "chain": ["planner"], "method": "POST", "path": "/v1/x"}' }, 'Any other fields of the check: depth, chain, groups, source_ip, time, method, path, host.'),
  field('w-args', 'Tool arguments (JSON)', { rows: 3, placeholder: '{"repo": "acme/web"}' }),
  h('button', { type: 'submit' }, 'Check'));
  page('Policies',
    h('dl', { class: 'facts' },
      h('dt', {}, 'Digest'), h('dd', {}, h('code', { id: 'policy-digest' }, status.digest)),
      h('dt', {}, 'Loaded'), h('dd', {}, time(status.loaded_at)),
      h('dt', {}, 'Directory'), h('dd', {}, status.dir),
      h('dt', {}, 'Policies'), h('dd', {}, status.policies.join(', ') || 'none: everything is denied')),
    (status.warnings || []).length ? section('Warnings', h('ul', {}, status.warnings.map((w) => h('li', {}, w)))) : null,
    section('What if', h('p', { class: 'help' }, 'Ask the policy set in force whether a request would be allowed, and which policies decide. Nothing changes; the check is recorded.'), form, out),
    section('The set in force', source.files.map((f) => h('details', {}, h('summary', {}, f.name), h('pre', { class: 'cedar' }, f.text)))));
}

// ---- secrets and MCP tools -----------------------------------------------

// A line diff of two texts (longest common subsequence; definitions are small).
function diff(a, b) {
  const x = a.split('\n'), y = b.split('\n');
  const n = x.length, m = y.length;
  const L = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { out.push(['same', x[i]]); i++; j++; }
    else if (j < m && (i === n || L[i][j + 1] >= L[i + 1][j])) { out.push(['added', y[j]]); j++; }
    else { out.push(['removed', x[i]]); i++; }
  }
  return h('pre', { class: 'diff', 'aria-label': 'Definition change: lines starting with + are new, with − removed' },
    out.map(([k, line]) => h('span', { class: `diff-${k}` }, (k === 'added' ? '+ ' : k === 'removed' ? '− ' : '  ') + line + '\n')));
}

async function secrets() {
  const [list, tools] = await Promise.all([api('GET', '/secrets'), api('GET', '/mcp/tools')]);
  const rows = list.map((s) => h('tr', {},
    h('th', { scope: 'row' }, s.name),
    h('td', {}, s.owner || 'shared'),
    h('td', {}, String(s.version)),
    h('td', {}, s.description || ''),
    h('td', {}, time(s.updated_at)),
    h('td', {}, ago(s.updated_at)),
    h('td', {}, s.last_used_at ? ago(s.last_used_at) : 'never'),
    h('td', {}, s.created_by)));
  const toolRows = tools.map((t) => h('tr', { 'data-tool': `${t.server}/${t.tool}` },
    h('th', { scope: 'row' }, `${t.server}/${t.tool}`),
    h('td', {}, t.state),
    h('td', {}, h('code', {}, (t.digest || '').slice(0, 16))),
    h('td', {}, t.approved_by || '–'),
    h('td', {}, time(t.updated_at)),
    h('td', {}, (t.policy_problems || []).join('; '))));
  const changed = tools.filter((t) => t.pending_definition).map((t) => h('article', { class: 'change', 'data-tool': `${t.server}/${t.tool}` },
    h('h3', {}, `${t.server}/${t.tool}`),
    h('p', {}, 'The server now announces a different definition. Calls of this tool are held until the change is approved.'),
    diff(JSON.stringify(t.definition, null, 2) || '', JSON.stringify(t.pending_definition, null, 2)),
    action('Approve definition', mayChange(), 'role admin', async () => {
      await api('POST', `/mcp/${encodeURIComponent(t.server)}/tools/${encodeURIComponent(t.tool)}/approve`, { digest: t.pending_digest });
            await secrets();
      say(`The new definition of ${t.server}/${t.tool} is approved.`);
    })));
  page('Secrets and tools',
    section('Secrets', h('p', { class: 'help' }, 'Metadata only: a value never leaves the broker.'),
      table('Stored secrets', ['Name', 'Owner', 'Version', 'Description', 'Last set', 'Age', 'Last used', 'Stored by'], rows, 'No secret is stored.')),
    section('MCP tools', table('Pinned MCP tools', ['Tool', 'State', 'Digest', 'Approved by', 'Changed', 'Policy problems'], toolRows, 'No MCP tool is pinned yet.')),
    section('Definition changes waiting', changed.length ? changed : h('p', { class: 'empty' }, 'No tool definition is waiting for approval.')));
}

draw();
