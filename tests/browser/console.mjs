// Drives the warrant console in headless Chromium (Debian's, through
// playwright-core) for crates/warrant/tests/it/console.rs, which starts the
// broker, sets the scene and checks what the page did against the broker.
//
//   node console.mjs <scenario>
//
// Input in the environment: BASE (the API listener's URL), SHOTS (where
// screenshots go), TOKEN_ADMIN, TOKEN_APPROVER, TOKEN_AUDITOR and whatever
// the scenario names. Prints one JSON line with what it saw; exits 1 with
// the reason when something is not as it must be.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env('BASE');
const SHOTS = env('SHOTS');
mkdirSync(SHOTS, { recursive: true });

function must(ok, why) {
  if (!ok) throw new Error(why);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});

const problems = []; // script errors and CSP violations on any page

async function open(viewport) {
  const context = await browser.newContext({ viewport: viewport || { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.on('pageerror', (e) => problems.push(`script error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/.test(m.text())) problems.push(m.text());
  });
  return page;
}

async function signIn(page, token, path) {
  await page.goto(BASE + (path || '/console/'));
  await page.getByLabel('Admin token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#who').getByText('Signed in as').waitFor();
}

async function shot(page, name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

async function heading(page, text) {
  await page.getByRole('heading', { level: 1, name: text }).waitFor();
  await page.locator('.loading').waitFor({ state: 'detached' });
}

const scenarios = {
  // Every page, for each role: what each role is offered, and screenshots.
  async roles() {
    const agent = env('AGENT');
    const seen = {};
    for (const role of ['auditor', 'approver', 'admin']) {
      const page = await open();
      await signIn(page, env(`TOKEN_${role.toUpperCase()}`));
      await heading(page, 'Overview');
      must((await page.locator('#who').textContent()).includes(`role ${role}`), `the header names role ${role}`);
      await shot(page, `${role}-overview`);
      await page.getByRole('link', { name: 'Agents' }).click();
      await heading(page, 'Agents');
      const disable = page.locator(`tr[data-agent="${agent}"] button[data-action="disable"]`);
      seen[role] = { disable_enabled: await disable.isEnabled() };
      await shot(page, `${role}-agents`);
      for (const [path, title] of [['/console/audit', 'Live audit'], ['/console/approvals', 'Approvals'],
        ['/console/policies', 'Policies'], ['/console/secrets', 'Secrets and tools']]) {
        await page.goto(BASE + path);
        await heading(page, title);
        await shot(page, `${role}-${path.split('/').pop()}`);
      }
      await page.context().close();
    }
    return seen;
  },

  // An auditor forces the disabled Disable button: the server refuses it and
  // the page says so in words.
  async forced() {
    const agent = env('AGENT');
    const page = await open();
    await signIn(page, env('TOKEN_AUDITOR'), '/console/agents');
    await heading(page, 'Agents');
    const button = page.locator(`tr[data-agent="${agent}"] button[data-action="disable"]`);
    must(await button.isDisabled(), 'the auditor is offered Disable as disabled');
    must((await button.getAttribute('title')).includes('auditor'), 'the button says why it is disabled');
    await button.evaluate((b) => { b.disabled = false; b.removeAttribute('aria-disabled'); });
    await button.click();
    const error = page.locator('#error');
    await error.waitFor({ state: 'visible' });
    const text = await error.textContent();
    await shot(page, 'auditor-forced-disable');
    // And straight at the API, with the session's own CSRF token.
    const direct = await page.evaluate(async (name) => {
      const who = await (await fetch('/console/session')).json();
      const r = await fetch(`/console/api/v1/agents/${name}/disable`, { method: 'POST', headers: { 'x-warrant-csrf': who.csrf } });
      return { status: r.status, body: await r.json() };
    }, agent);
    return { error: text, direct };
  },

  // An approver opens the pending MCP call, checks what it is, approves it.
  async approve() {
    const id = env('APPROVAL');
    const page = await open();
    await signIn(page, env('TOKEN_APPROVER'));
    await heading(page, 'Overview');
    await page.getByRole('link', { name: id }).first().click();
    await heading(page, `Approval ${id}`);
    const request = await page.locator('main').textContent();
    await shot(page, 'approver-approval');
    await page.getByLabel('Reason (recorded in the audit trail)').fill('checked in the console');
    await page.getByRole('button', { name: 'Approve' }).click();
    await page.locator('#status').getByText(`Approval ${id} approved.`).waitFor();
    const state = await page.locator('dl.facts dd').first().textContent();
    await shot(page, 'approver-approved');
    return { request, state };
  },

  // The transaction page: its tree, as the page shows it.
  async trace() {
    const txn = env('TXN');
    const page = await open();
    await signIn(page, env('TOKEN_AUDITOR'), `/console/txn/${txn}`);
    await heading(page, `Transaction ${txn}`);
    const tasks = await page.locator('#tree li[data-task]').evaluateAll((els) => els.map((e) => ({
      task: e.dataset.task,
      parent: e.parentElement.closest('li[data-task]')?.dataset.task || null,
    })));
    const records = await page.locator('#tree li[data-seq]').evaluateAll((els) => els.map((e) => ({
      seq: Number(e.dataset.seq),
      task: e.closest('li[data-task]').dataset.task,
      text: e.textContent,
    })));
    const nodes = await page.locator('svg.graph g[data-node]').count();
    const revoke = await page.getByRole('button', { name: 'Revoke the whole transaction' }).isDisabled();
    await shot(page, 'auditor-transaction');
    return { tasks, records, nodes, revoke_disabled: revoke };
  },

  // An admin revokes one task from the transaction page.
  async revoke() {
    const txn = env('TXN');
    const task = env('TASK');
    const page = await open();
    await signIn(page, env('TOKEN_ADMIN'), `/console/txn/${txn}`);
    await heading(page, `Transaction ${txn}`);
    await page.locator(`li[data-task="${task}"] > button[data-action="revoke task"]`).click();
    await page.locator('#status').getByText(`Task ${task} and every task under it are revoked.`).waitFor();
    await page.locator(`li[data-task="${task}"] > .state-revoked`).waitFor();
    await shot(page, 'admin-transaction-revoked');
    return {};
  },

  // A record committed while the live audit page is open appears on it.
  async live() {
    const page = await open();
    await signIn(page, env('TOKEN_AUDITOR'), '/console/audit?event=admin.agent');
    await heading(page, 'Live audit');
    await page.locator('#live-state').getByText('Live:').waitFor();
    const name = `live-${Date.now() % 100000}`;
    const started = Date.now();
    const r = await fetch(`${BASE}/admin/v1/agents`, {
      method: 'POST',
      headers: { authorization: `Bearer ${env('TOKEN_ADMIN')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name, owner: 'o', env: 'dev' }),
    });
    must(r.status === 201, `creating ${name} answered ${r.status}`);
    const committed = Date.now();
    await page.locator('#records tbody tr', { hasText: name }).first().waitFor({ timeout: 5000 });
    const shown = Date.now();
    await shot(page, 'auditor-live-audit');
    return { name, after_commit_ms: shown - committed, after_request_ms: shown - started };
  },

  // Phone width and the keyboard: the skip link comes first, every page
  // reads without sideways scrolling of the page itself.
  async usable() {
    const page = await open({ width: 375, height: 740 });
    await page.goto(BASE + '/console/');
    await page.getByLabel('Admin token').waitFor();
    const input = await page.evaluate(() => document.activeElement.id);
    await page.keyboard.type(env('TOKEN_AUDITOR'));
    await page.keyboard.press('Enter');
    await page.locator('#who').getByText('Signed in as').waitFor();
    await heading(page, 'Overview');
    // A fresh load: the first Tab reaches the skip link.
    await page.goto(BASE + '/console/');
    await heading(page, 'Overview');
    await page.keyboard.press('Tab');
    const first = await page.evaluate(() => document.activeElement.textContent);
    const widths = {};
    for (const [path, title] of [['/console/', 'Overview'], ['/console/agents', 'Agents'], ['/console/audit', 'Live audit'],
      ['/console/approvals', 'Approvals'], ['/console/policies', 'Policies'], ['/console/secrets', 'Secrets and tools']]) {
      await page.goto(BASE + path);
      await heading(page, title);
      widths[path] = await page.evaluate(() => document.documentElement.scrollWidth);
      await shot(page, `phone-${path.split('/').pop() || 'overview'}`);
    }
    // Keyboard only: from the navigation to the Agents page.
    await page.goto(BASE + '/console/');
    await heading(page, 'Overview');
    await page.locator('nav a', { hasText: 'Agents' }).focus();
    await page.keyboard.press('Enter');
    await heading(page, 'Agents');
    // Signing out ends the session: the next page asks to sign in again.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to warrant' }).waitFor();
    await page.goto(BASE + '/console/agents');
    await page.getByRole('heading', { name: 'Sign in to warrant' }).waitFor();
    return { first, input, widths, url: page.url() };
  },

  // A wrong token is refused in words, and nothing is signed in.
  async refused() {
    const page = await open();
    await page.goto(BASE + '/console/');
    await page.getByLabel('Admin token').fill('wadm_' + '0'.repeat(64));
    await page.getByRole('button', { name: 'Sign in' }).click();
    const error = page.locator('#error');
    await error.waitFor({ state: 'visible' });
    const text = await error.textContent();
    await shot(page, 'signin-refused');
    const cookies = await page.context().cookies();
    return { error: text, cookies: cookies.length };
  },

  // Single sign-on: through the provider's login and consent pages and back,
  // signed in with the role the user's groups give (SSO_EXPECT=refused: sent
  // back to sign-in, with why in words).
  async sso() {
    const user = env('SSO_USER');
    const page = await open();
    await page.goto(BASE + '/console/');
    await page.getByRole('link', { name: 'Sign in with single sign-on' }).click();
    await page.locator('input[name="login"]').fill(user);
    await page.locator('input[name="password"]').fill('any password');
    await page.locator('button[type="submit"]').first().click();
    // The provider may ask for consent; then back to the console.
    for (let i = 0; i < 5 && !page.url().startsWith(BASE); i++) {
      await page.waitForLoadState('load');
      if (page.url().startsWith(BASE)) break;
      const button = page.locator('button[type="submit"]');
      if (await button.count()) await button.first().click();
      await page.waitForTimeout(200);
    }
    await page.waitForURL((u) => u.toString().startsWith(BASE + '/console/'));
    if (process.env.SSO_EXPECT === 'refused') {
      const notice = page.locator('main .notice');
      await notice.waitFor();
      await shot(page, `sso-refused-${user}`);
      return { notice: await notice.textContent(), url: page.url() };
    }
    await page.locator('#who').getByText('Signed in as').waitFor();
    await heading(page, 'Overview');
    await shot(page, `sso-${user}`);
    const who = await page.locator('#who').textContent();
    // What the session may do is the role's: an approver may not disable.
    const direct = await page.evaluate(async () => {
      const me = await (await fetch('/console/session')).json();
      const r = await fetch('/console/api/v1/agents/triage/disable', { method: 'POST', headers: { 'x-warrant-csrf': me.csrf } });
      return { me, status: r.status };
    });
        const session = (await page.context().cookies()).find((c) => c.name === 'warrant_console');
    return { who, url: page.url(), cookie: `${session.name}=${session.value}`, ...direct };
  },

  // Approve a changed MCP tool definition from the diff.
  async tool() {
    const tool = env('TOOL');
    const page = await open();
    await signIn(page, env('TOKEN_ADMIN'), '/console/secrets');
    await heading(page, 'Secrets and tools');
    const change = page.locator(`article.change[data-tool="${tool}"]`);
    const diff = await change.locator('pre.diff').textContent();
    await shot(page, 'admin-tool-change');
    await change.getByRole('button', { name: 'Approve definition' }).click();
    await page.locator('#status').getByText(`The new definition of ${tool} is approved.`).waitFor();
    return { diff };
  },
};

const name = process.argv[2];
try {
  must(scenarios[name], `no scenario ${name}`);
  const out = await scenarios[name]();
  must(problems.length === 0, `the page reported: ${problems.join(' | ')}`);
  console.log(JSON.stringify(out));
  await browser.close();
} catch (e) {
  console.error(`${name}: ${e.stack || e}`);
  await browser.close();
  process.exit(1);
}
