// Tenant console: one page over the public REST API (`/api/v1`), so
// everything it shows can also be scripted.
//
// Safe by construction: every value from the API reaches the page as a text
// node or an attribute set by `h()`; nothing is ever parsed as HTML. The page's
// Content-Security-Policy allows only this file as script and enforces Trusted
// Types, so an `innerHTML` assignment would throw instead of running.
//
// The tenant key lives in sessionStorage (this tab only), goes out only as the
// Bearer token, and never appears in a URL.
'use strict';

(() => {
  const API = 'api/v1';
  const KEY = 'webhooks.console.key';
  const STATUSES = ['pending', 'retrying', 'succeeded', 'failed'];

  const main = document.getElementById('main');
  const nav = document.getElementById('nav');
  const signOutButton = document.getElementById('sign-out');
  const bannerBox = document.getElementById('banner');
  const toasts = document.getElementById('toasts');

  /** Routes the server has; others light up when its OpenAPI document lists them. */
  const features = { tenantLog: false, eventLookup: false, recover: false, jobs: false, bulkRetry: false };
  let catalog = null;
  /** A secret just created, shown once on the next screen and then forgotten. */
  let freshSecret = null;
  /** Bumped on every navigation: late answers of a previous screen are dropped. */
  let screen = 0;
  const timers = new Set();

  // ---------------------------------------------------------------- DOM helpers

  /** Builds an element. Strings among `children` become text nodes, never HTML. */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'class') el.className = value;
      else if (name === 'on') for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
      else if (name === 'value' || name === 'checked' || name === 'selected') el[name] = value;
      else el.setAttribute(name, value === true ? '' : String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function replace(el, ...children) {
    el.replaceChildren();
    return append(el, children);
  }

  /** A table cell; its label heads it when rows become cards on narrow screens. */
  const cell = (label, ...content) => h('td', { 'data-label': label }, h('div', { class: 'cell' }, content));
  /** `text`, cut to `max` characters with an ellipsis. */
  const short = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);
  const link = (href, text, props) => h('a', Object.assign({ href }, props || {}), text);
  const badge = (text, kind) => h('span', { class: `badge ${kind || text}` }, text);
  const route = (...parts) => '#/' + parts.map((p) => encodeURIComponent(p)).join('/');

  function button(text, onClick, cls, props) {
    return h('button', Object.assign({ type: 'button', class: `button ${cls || ''}`.trim(), on: { click: onClick } }, props || {}), text);
  }

  /** Disables `btn` while `work` runs. */
  async function busy(btn, work) {
    btn.disabled = true;
    try {
      return await work();
    } finally {
      btn.disabled = false;
    }
  }

  // ---------------------------------------------------------------- time

  function absolute(iso) {
    const t = new Date(iso);
    if (Number.isNaN(t.getTime())) return String(iso);
    return t.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC').replace(/Z$/, ' UTC');
  }

  function relative(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return String(iso);
    const seconds = Math.round((Date.now() - t) / 1000);
    const a = Math.abs(seconds);
    let text;
    if (a < 45) text = `${Math.max(a, 1)} s`;
    else if (a < 45 * 60) text = `${Math.round(a / 60)} min`;
    else if (a < 22 * 3600) text = `${Math.round(a / 3600)} h`;
    else text = `${Math.round(a / 86400)} d`;
    return seconds < 0 ? `in ${text}` : `${text} ago`;
  }

  /** Relative time, with the absolute one as a tooltip. */
  const when = (iso) => (iso ? h('time', { datetime: iso, title: absolute(iso) }, relative(iso)) : h('span', { class: 'muted' }, '—'));
  /** Absolute time followed by the relative one. */
  const whenFull = (iso) =>
    iso ? h('span', {}, h('time', { datetime: iso }, absolute(iso)), h('span', { class: 'muted' }, ` (${relative(iso)})`)) : h('span', { class: 'muted' }, '—');

  function toIso(localValue) {
    if (!localValue) return null;
    const t = new Date(localValue);
    return Number.isNaN(t.getTime()) ? null : t.toISOString();
  }

  // ---------------------------------------------------------------- messages

  function banner(text) {
    replace(
      bannerBox,
      h('p', {}, text),
      button('Dismiss', () => { bannerBox.hidden = true; }, 'quiet'),
    );
    bannerBox.hidden = false;
    bannerBox.scrollIntoView({ block: 'nearest' });
  }

  function toast(...content) {
    const el = h('div', { class: 'toast' }, content);
    toasts.append(el);
    setTimeout(() => el.remove(), 6000);
  }

  function inlineError(err) {
    return h('p', { class: 'inline-error', role: 'alert' }, describe(err));
  }

  function describe(err) {
    if (err instanceof ApiError) {
      if (err.status === 0) return 'The API cannot be reached. Check that the service is running, then try again.';
      const field = err.details && err.details.field ? ` (${err.details.field})` : '';
      return `${err.message}${field} [${err.status} ${err.code}]`;
    }
    return String(err && err.message ? err.message : err);
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details || null;
    }
  }

  /** Calls the REST API with the tenant key; 401 signs out, 5xx raises the banner. */
  async function api(method, path, body) {
    const key = sessionStorage.getItem(KEY);
    const headers = { Accept: 'application/json' };
    if (key) headers.Authorization = `Bearer ${key}`;
    const init = { method, headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(`${API}${path}`, init);
    } catch (_) {
      banner('The API cannot be reached. Check that the service is running, then try again.');
      throw new ApiError(0, 'network', 'network error');
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (res.ok) return data;
    const e = (data && data.error) || {};
    const err = new ApiError(res.status, e.code || `http_${res.status}`, e.message || res.statusText || 'request failed', e.details);
    if (res.status === 401 && key) {
      signOut('The server refused your key (it may have been revoked). Sign in again.');
      err.handled = true;
    } else if (res.status >= 500) {
      banner(`The server could not complete the request (${res.status} ${err.code}): ${err.message}`);
      err.handled = 'banner';
    }
    throw err;
  }

  /** Reads the OpenAPI document (no key needed) to see which optional routes exist. */
  async function detectFeatures() {
    try {
      const res = await fetch(`${API}/openapi.json`, { cache: 'no-store', credentials: 'omit' });
      const doc = res.ok ? await res.json() : null;
      const paths = (doc && doc.paths) || {};
      const has = (pattern, method) => Object.keys(paths).some((p) => pattern.test(p) && paths[p] && paths[p][method]);
      features.tenantLog = has(/\/webhooks\/deliveries$/, 'get');
      features.bulkRetry = has(/\/webhooks\/deliveries\/retry$/, 'post');
      features.eventLookup = has(/\/events\/\{[^}]+\}$/, 'get');
      features.recover = has(/\/webhooks\/subscriptions\/\{[^}]+\}\/recover$/, 'post');
      features.jobs = has(/\/webhooks\/jobs\/\{[^}]+\}$/, 'get');
    } catch (_) {
      // Without the document the console shows the core screens only.
    }
    nav.querySelector('[data-nav="deliveries"]').hidden = !features.tenantLog;
    nav.querySelector('[data-nav="events"]').hidden = !features.eventLookup;
  }

  async function loadCatalog() {
    if (catalog) return catalog;
    try {
      const data = await api('GET', '/webhooks/events');
      catalog = (data && data.items) || [];
    } catch (_) {
      catalog = [];
    }
    return catalog;
  }

  // ---------------------------------------------------------------- sign-in

  function signedIn() {
    return Boolean(sessionStorage.getItem(KEY));
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    catalog = null;
    showSignIn(message);
  }

  function showSignIn(message) {
    stopTimers();
    screen += 1;
    nav.hidden = true;
    signOutButton.hidden = true;
    const input = h('input', { type: 'password', id: 'api-key', name: 'api-key', autocomplete: 'off', spellcheck: 'false', required: true, 'aria-describedby': 'api-key-hint' });
    const error = h('p', { class: 'error', id: 'signin-error', role: 'alert' }, message || '');
    error.hidden = !message;
    const submit = h('button', { type: 'submit', class: 'button primary' }, 'Sign in');
    const form = h(
      'form',
      { class: 'stack', method: 'post', novalidate: true },
      h('div', { class: 'field' },
        h('label', { for: 'api-key' }, 'Tenant API key'),
        input,
        h('p', { class: 'hint', id: 'api-key-hint' },
          'Kept in this browser tab only and sent to this server as a Bearer token. Create one with ',
          h('code', {}, 'webhooks-ingest api-key create --tenant <id>'),
          '; ', h('code', {}, './scripts/run.sh'), ' prints a development key.')),
      error,
      h('div', { class: 'actions' }, submit),
    );
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      error.hidden = true;
      if (!key) {
        replace(error, 'Paste a tenant API key.');
        error.hidden = false;
        input.focus();
        return;
      }
      await busy(submit, async () => {
        const refusal = await checkKey(key);
        if (refusal) {
          replace(error, refusal);
          error.hidden = false;
          input.setAttribute('aria-invalid', 'true');
          input.select();
          return;
        }
        sessionStorage.setItem(KEY, key);
        input.value = '';
        await start();
      });
    });
    replace(main, h('section', { class: 'signin panel', 'aria-labelledby': 'signin-title' },
      h('h1', { id: 'signin-title' }, 'Sign in to the webhooks console'),
      h('p', { class: 'muted' }, 'See your subscriptions, their health and every delivery attempt; retry what failed.'),
      form));
    input.focus();
  }

  /** Returns why a key is refused, or null when it is a tenant key. */
  async function checkKey(key) {
    let res;
    try {
      res = await fetch(`${API}/webhooks/subscriptions?limit=1`, {
        headers: { Authorization: `Bearer ${key}`, Accept: 'application/json' },
        cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
      });
    } catch (_) {
      return 'The API cannot be reached. Check that the service is running.';
    }
    if (res.ok) return null;
    if (res.status === 401) return 'This key was refused: it is unknown or revoked.';
    if (res.status === 403) return 'This is a publisher key. The console needs a tenant key.';
    return `The server answered ${res.status}; try again in a moment.`;
  }

  // ---------------------------------------------------------------- routing

  function stopTimers() {
    for (const t of timers) clearInterval(t);
    timers.clear();
  }

  function every(ms, fn) {
    const t = setInterval(fn, ms);
    timers.add(t);
    return t;
  }

  const routes = [
    [/^#\/subscriptions\/new$/, () => subscriptionForm(null)],
    [/^#\/subscriptions\/([^/]+)\/edit$/, (id) => subscriptionForm(id)],
    [/^#\/subscriptions\/([^/]+)$/, (id) => subscriptionDetail(id)],
    [/^#\/subscriptions$/, () => subscriptionList()],
    [/^#\/deliveries\/([^/]+)$/, (id) => deliveryDetail(id)],
    [/^#\/deliveries$/, () => tenantLog()],
    [/^#\/events(?:\/([^/]+))?$/, (id) => eventLookup(id)],
  ];

  function render() {
    if (!signedIn()) {
      showSignIn();
      return;
    }
    stopTimers();
    screen += 1;
    nav.hidden = false;
    signOutButton.hidden = false;
    const hash = location.hash || '#/subscriptions';
    const section = hash.split('/')[1] || 'subscriptions';
    for (const a of nav.querySelectorAll('a')) {
      if (a.dataset.nav === section) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    for (const [pattern, view] of routes) {
      const m = pattern.exec(hash);
      if (m) {
        const arg = m[1] === undefined ? undefined : decodeURIComponent(m[1]);
        replace(main, h('p', { class: 'loading' }, 'Loading…'));
        view(arg);
        return;
      }
    }
    location.replace('#/subscriptions');
  }

  /** Runs `fn` only if the user is still on the screen that asked for it. */
  function stillOn(token) {
    return token === screen;
  }

  function page(...children) {
    replace(main, children);
    const title = main.querySelector('h1');
    if (title) document.title = `${title.textContent} · Webhooks console`;
  }

  function failed(err) {
    if (err && err.handled === 'banner') {
      // The banner says what happened; offer the way back.
      page(h('div', { class: 'page-head' }, h('h1', {}, 'This page could not load')),
        h('p', {}, 'The server had a problem (see above). It is usually brief.'),
        h('div', { class: 'actions' }, button('Try again', () => render(), 'primary', { id: 'try-again' }), link('#/subscriptions', 'Subscriptions', { class: 'button quiet' })));
      return;
    }
    if (err && err.handled) return;
    page(h('div', { class: 'page-head' }, h('h1', {}, err instanceof ApiError && err.status === 404 ? 'Not found' : 'Something went wrong')),
      inlineError(err), h('p', {}, link('#/subscriptions', 'Back to subscriptions')));
  }

  // ---------------------------------------------------------------- subscriptions

  function subscriptionState(sub) {
    if (sub.disabled_reason) return { label: 'disabled', kind: 'disabled', reason: sub.disabled_reason };
    if (!sub.is_active) return { label: 'paused', kind: 'paused' };
    return { label: 'active', kind: 'active' };
  }

  function healthCell(health) {
    if (!health) return h('span', { class: 'muted' }, '—');
    const circuit = health.circuit || 'closed';
    const label = { closed: 'healthy', open: 'circuit open', half_open: 'probing' }[circuit] || circuit;
    const lines = [badge(label, circuit)];
    if (health.last_failure_at) lines.push(h('div', { class: 'cell-sub' }, 'last failure ', when(health.last_failure_at)));
    if (health.last_success_at) lines.push(h('div', { class: 'cell-sub' }, 'last success ', when(health.last_success_at)));
    return h('div', {}, lines);
  }

  function eventChips(events, max) {
    const shown = max ? events.slice(0, max) : events;
    const chips = shown.map((e) => h('span', { class: 'chip' }, e));
    if (max && events.length > max) chips.push(h('span', { class: 'muted' }, `+${events.length - max}`));
    return h('div', { class: 'chips' }, chips);
  }

  async function subscriptionList() {
    const token = screen;
    const rows = h('tbody', {});
    const more = h('div', { class: 'more' });
    const table = h('table', { class: 'list', id: 'subscriptions' },
      h('thead', {}, h('tr', {}, ['Endpoint', 'Events', 'Status', 'Health', 'Created'].map((t) => h('th', { scope: 'col', class: `col-${t.toLowerCase()}` }, t)))),
      rows);
    const body = h('div', { class: 'panel' }, table, more);
    page(
      h('div', { class: 'page-head' },
        h('div', {}, h('h1', {}, 'Subscriptions'), h('p', { class: 'sub' }, 'Endpoints that receive your events.')),
        link('#/subscriptions/new', 'New subscription', { class: 'button primary', id: 'new-subscription' })),
      body,
    );
    let count = 0;
    const load = async (cursor) => {
      const query = cursor ? `?limit=50&cursor=${encodeURIComponent(cursor)}` : '?limit=50';
      const data = await api('GET', `/webhooks/subscriptions${query}`);
      if (!stillOn(token)) return;
      // Health is shown where the server reports it.
      if (!cursor) table.classList.toggle('no-health', !data.items.some((sub) => sub.health));
      for (const sub of data.items) {
        count += 1;
        const state = subscriptionState(sub);
        const href = route('subscriptions', sub.id);
        const tr = h('tr', { class: 'clickable', 'data-id': sub.id },
          cell('Endpoint',
            h('div', { class: 'cell-main' }, link(href, sub.url, { class: 'mono break' })),
            sub.description ? h('div', { class: 'cell-sub break clamp', title: sub.description }, sub.description) : null),
          cell('Events', eventChips(sub.events, 3)),
          cell('Status', badge(state.label, state.kind), state.reason ? h('div', { class: 'cell-sub' }, state.reason) : null),
          h('td', { 'data-label': 'Health', class: 'col-health' }, h('div', { class: 'cell' }, healthCell(sub.health))),
          cell('Created', when(sub.created_at)));
        tr.addEventListener('click', (e) => { if (!e.target.closest('a,button')) location.hash = href; });
        rows.append(tr);
      }
      more.replaceChildren();
      if (data.next_cursor) more.append(button('Load more', (e) => busy(e.currentTarget, () => load(data.next_cursor).catch(showIn(body)))));
      if (count === 0) {
        replace(body, h('div', { class: 'empty' },
          h('h2', {}, 'No subscriptions yet'),
          h('p', {}, 'Create one to start receiving events at your endpoint.'),
          link('#/subscriptions/new', 'Create a subscription', { class: 'button primary' })));
      }
    };
    try {
      await load(null);
    } catch (err) {
      if (stillOn(token)) failed(err);
    }
  }

  const showIn = (container) => (err) => {
    if (!err.handled) container.prepend(inlineError(err));
  };

  /** The "shown once" secret panel with a copy button. */
  function secretPanel(secret, heading, onDone) {
    const value = h('code', { id: 'secret-value' }, secret);
    const copy = button('Copy', async () => {
      let copied = false;
      try {
        await navigator.clipboard.writeText(secret);
        copied = true;
      } catch (_) {
        // No clipboard permission: select the text so Ctrl+C copies it.
        const range = document.createRange();
        range.selectNodeContents(value);
        const selection = getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
      }
      replace(copy, copied ? 'Copied' : 'Selected: press Ctrl+C');
      setTimeout(() => replace(copy, 'Copy'), 4000);
    }, 'primary', { id: 'copy-secret' });
    return h('section', { class: 'secret', 'aria-labelledby': 'secret-title' },
      h('h2', { id: 'secret-title' }, heading),
      h('p', {}, 'Use it to verify the ', h('code', {}, 'X-Webhook-Signature'), ' and ', h('code', {}, 'webhook-signature'),
        ' headers. It is shown only now: copy it to your secret store.'),
      h('div', { class: 'secret-value' }, value, copy),
      onDone ? button("I've saved it", onDone, '', { id: 'secret-done' }) : null);
  }

  async function subscriptionDetail(id) {
    const token = screen;
    let sub;
    try {
      [sub] = await Promise.all([api('GET', `/webhooks/subscriptions/${encodeURIComponent(id)}`), loadCatalog()]);
    } catch (err) {
      if (stillOn(token)) failed(err);
      return;
    }
    if (!stillOn(token)) return;
    const fresh = freshSecret && freshSecret.id === sub.id ? freshSecret.secret : null;
    freshSecret = null;
    const secretSlot = h('div', {});
    if (fresh) secretSlot.append(secretPanel(fresh, 'Subscription created: here is its signing secret', () => secretSlot.replaceChildren()));
    const state = subscriptionState(sub);
    const messages = h('div', {});
    const act = (text, fn, cls, props) => button(text, (e) => busy(e.currentTarget, () => fn().catch((err) => {
      if (!err.handled) replace(messages, inlineError(err));
    })), cls, props);

    const toggle = sub.is_active
      ? act('Pause', () => setActive(sub, false), '', { id: 'pause' })
      : act(sub.disabled_reason ? 'Re-enable' : 'Resume', () => setActive(sub, true), '', { id: 'resume' });
    const actions = h('div', { class: 'actions' },
      act('Send test event', async () => {
        const queued = await api('POST', `/webhooks/subscriptions/${encodeURIComponent(sub.id)}/test`);
        toast('Test event queued. ', link(route('deliveries', queued.delivery_id), 'View delivery'));
      }, '', { id: 'send-test', disabled: !sub.is_active }),
      toggle,
      link(route('subscriptions', sub.id, 'edit'), 'Edit', { class: 'button', id: 'edit' }),
      act('Rotate secret', () => rotate(sub, secretSlot), '', { id: 'rotate' }),
      features.recover ? act('Recover…', async () => recoverDialog(sub), '', { id: 'recover', disabled: !sub.is_active }) : null,
      act('Delete', async () => deleteDialog(sub), 'danger', { id: 'delete' }));

    const headers = Object.entries(sub.headers || {});
    const facts = h('dl', { class: sub.health ? 'facts' : 'facts facts-2' },
      h('dt', {}, 'Subscription ID'), h('dd', { class: 'mono' }, sub.id),
      h('dt', {}, 'Events'), h('dd', {}, eventChips(sub.events)),
      h('dt', {}, 'Retries'), h('dd', {}, sub.retry_enabled ? `on, up to ${sub.max_retries}` : 'off'),
      h('dt', {}, 'Timeout'), h('dd', {}, `${sub.timeout_seconds} s`),
      h('dt', {}, 'Custom headers'), h('dd', {}, headers.length
        ? h('table', { class: 'headers' }, h('tbody', {}, headers.map(([n, v]) => h('tr', {}, h('th', { scope: 'row' }, n), h('td', {}, v)))))
        : h('span', { class: 'muted' }, 'none')),
      h('dt', {}, 'Created'), h('dd', {}, whenFull(sub.created_at)),
      h('dt', {}, 'Updated'), h('dd', {}, whenFull(sub.updated_at)));

    const health = sub.health;
    const healthPanel = !health ? null : h('section', { class: 'panel', 'aria-labelledby': 'health-title', id: 'health' },
      h('h2', { id: 'health-title' }, 'Health'),
      h('dl', { class: 'facts' },
          h('dt', {}, 'Circuit'), h('dd', {}, healthCell({ circuit: health.circuit })),
          h('dt', {}, 'Consecutive failures'), h('dd', {}, String(health.consecutive_failures ?? 0)),
          h('dt', {}, 'Last success'), h('dd', {}, whenFull(health.last_success_at)),
          h('dt', {}, 'Last failure'), h('dd', {}, whenFull(health.last_failure_at)),
          health.open_until ? [h('dt', {}, 'Paused until'), h('dd', {}, whenFull(health.open_until))] : null));

    const log = h('section', { class: 'panel', 'aria-labelledby': 'log-title' });
    page(
      h('div', { class: 'page-head' },
        h('div', {},
          h('div', { class: 'crumbs' }, link('#/subscriptions', 'Subscriptions'), ' › Subscription'),
          h('h1', { class: 'title-url', id: 'subscription-url' }, sub.url),
          sub.description ? h('p', { class: 'sub break', id: 'subscription-description' }, sub.description) : null,
          h('p', { class: 'sub' }, badge(state.label, state.kind), state.reason ? h('span', { id: 'disabled-reason' }, ` ${state.reason}`) : null)),
        actions),
      messages,
      secretSlot,
      h('div', { class: healthPanel ? 'grid-2' : '' }, h('section', { class: 'panel', 'aria-labelledby': 'settings-title' }, h('h2', { id: 'settings-title' }, 'Settings'), facts), healthPanel),
      log,
    );
    deliveryLog(log, { subscription: sub, token });
  }

  async function setActive(sub, active) {
    await api('PATCH', `/webhooks/subscriptions/${encodeURIComponent(sub.id)}`, { is_active: active });
    toast(active ? 'Subscription resumed: new events are delivered again.' : 'Subscription paused: new events are not delivered to it.');
    render();
  }

  function modal(title, body, confirmText, confirmClass, onConfirm) {
    const error = h('div', {});
    const confirm = h('button', { type: 'submit', class: `button ${confirmClass}`, id: 'dialog-confirm' }, confirmText);
    const cancel = h('button', { type: 'button', class: 'button', id: 'dialog-cancel' }, 'Cancel');
    const form = h('form', { method: 'dialog' }, h('h2', { id: 'dialog-title' }, title), body, error, h('div', { class: 'actions' }, cancel, confirm));
    const dialog = h('dialog', { 'aria-labelledby': 'dialog-title' }, form);
    cancel.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => dialog.remove());
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      await busy(confirm, async () => {
        try {
          if ((await onConfirm(error)) !== false) dialog.close();
        } catch (err) {
          // A modal hides the banner: say it here too.
          if (!err.handled || err.handled === 'banner') replace(error, inlineError(err));
        }
      });
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
    return dialog;
  }

  function deleteDialog(sub) {
    modal('Delete this subscription?',
      h('div', {}, h('p', { class: 'mono break' }, sub.url),
        h('p', {}, 'No more events will be sent to it. Its past deliveries stay readable one by one. This cannot be undone.')),
      'Delete subscription', 'danger solid',
      async () => {
        await api('DELETE', `/webhooks/subscriptions/${encodeURIComponent(sub.id)}`);
        toast('Subscription deleted.');
        location.hash = '#/subscriptions';
      });
  }

  function rotate(sub, slot) {
    modal('Rotate the signing secret?',
      h('p', {}, 'A new secret is made now and shown once. For 24 hours webhook-signature also carries a signature by the old one, so your endpoint can switch over.'),
      'Rotate secret', 'primary',
      async () => {
        const rotated = await api('POST', `/webhooks/subscriptions/${encodeURIComponent(sub.id)}/rotate-secret`);
        replace(slot, secretPanel(rotated.secret, 'New signing secret', () => slot.replaceChildren()));
        slot.querySelector('#copy-secret').focus();
      });
    return Promise.resolve();
  }

  function recoverDialog(sub) {
    const since = h('input', { type: 'datetime-local', id: 'recover-since', required: true, step: 1 });
    const until = h('input', { type: 'datetime-local', id: 'recover-until', step: 1 });
    const missed = h('input', { type: 'checkbox', id: 'recover-missed' });
    const progress = h('div', {});
    const dialog = modal('Recover deliveries',
      h('div', { class: 'stack' },
        h('p', {}, 'Send this subscription its failed deliveries from a time window again.'),
        h('div', { class: 'field' }, h('label', { for: 'recover-since' }, 'Since (your local time)'), since),
        h('div', { class: 'field' }, h('label', { for: 'recover-until' }, 'Until (optional; now if empty)'), until),
        h('label', { class: 'check' }, missed, h('span', {}, 'Also send events of the window that never had a delivery to it')),
        progress),
      'Start recovery', 'primary',
      async (error) => {
        const body = { since: toIso(since.value) };
        if (!body.since) {
          replace(error, h('p', { class: 'inline-error' }, 'Choose when the window starts.'));
          return false;
        }
        if (until.value) body.until = toIso(until.value);
        if (missed.checked) body.include_missed = true;
        const job = await api('POST', `/webhooks/subscriptions/${encodeURIComponent(sub.id)}/recover`, body);
        replace(progress, jobProgress(job));
        dialog.querySelector('#dialog-confirm').hidden = true;
        replace(dialog.querySelector('#dialog-cancel'), 'Close');
        return false;
      });
  }

  /** A job's progress, polled until it finishes. */
  function jobProgress(job) {
    const box = h('div', { class: 'job', id: 'job', 'aria-live': 'polite' });
    const draw = (j) => {
      const total = Number(j.total) || 0;
      const queued = Number(j.queued) || 0;
      replace(box,
        h('div', {}, badge(j.status || 'running'), ` ${queued} of ${total} queued`),
        h('progress', { max: Math.max(total, 1), value: total ? queued : (j.status === 'completed' ? 1 : 0) }),
        j.finished_at ? h('div', { class: 'cell-sub' }, 'finished ', when(j.finished_at)) : null,
        j.error ? h('p', { class: 'inline-error' }, j.error) : null);
    };
    draw(job);
    if (features.jobs && job.id && job.status === 'running') {
      const t = setInterval(async () => {
        if (!box.isConnected) { clearInterval(t); return; }
        try {
          const j = await api('GET', `/webhooks/jobs/${encodeURIComponent(job.id)}`);
          draw(j);
          if (j.status !== 'running') clearInterval(t);
        } catch (_) {
          clearInterval(t);
        }
      }, 1000);
    }
    return box;
  }

  // ---------------------------------------------------------------- create / edit

  async function subscriptionForm(id) {
    const token = screen;
    let sub = null;
    try {
      [sub] = await Promise.all([id ? api('GET', `/webhooks/subscriptions/${encodeURIComponent(id)}`) : null, loadCatalog()]);
    } catch (err) {
      if (stillOn(token)) failed(err);
      return;
    }
    if (!stillOn(token)) return;
    const fieldError = {};
    const field = (name, label, input, hint) => {
      fieldError[name] = h('p', { class: 'error', id: `${name}-error` });
      fieldError[name].hidden = true;
      return h('div', { class: 'field' }, h('label', { for: name }, label), input, hint ? h('p', { class: 'hint' }, hint) : null, fieldError[name]);
    };
    const url = h('input', { type: 'url', id: 'url', required: true, placeholder: 'https://example.com/webhooks', value: sub ? sub.url : '', autocomplete: 'off' });
    const description = h('textarea', { id: 'description', maxlength: 500, value: sub && sub.description ? sub.description : '' });
    const retry = h('input', { type: 'checkbox', id: 'retry_enabled', checked: sub ? sub.retry_enabled : true });
    const maxRetries = h('input', { type: 'number', id: 'max_retries', min: 0, max: 10, value: String(sub ? sub.max_retries : 3) });
    const timeout = h('input', { type: 'number', id: 'timeout_seconds', min: 1, max: 60, value: String(sub ? sub.timeout_seconds : 30) });

    // Events: every catalog type by category, `category.*` per category, and `*`.
    const chosen = new Set(sub ? sub.events : []);
    const boxes = [];
    const eventBox = (value, label) => {
      const box = h('input', { type: 'checkbox', value, checked: chosen.has(value), 'data-event': value });
      boxes.push(box);
      chosen.delete(value);
      return h('label', { class: 'check' }, box, h('span', {}, label));
    };
    const categories = new Map();
    for (const item of catalog) {
      if (item.category === 'webhook' && !item.type.startsWith('webhook.')) continue;
      if (!categories.has(item.category)) categories.set(item.category, []);
      categories.get(item.category).push(item);
    }
    const groups = [];
    const everything = eventBox('*', h('span', {}, h('strong', {}, 'Every event'), ' ', h('code', {}, '*')));
    for (const [category, items] of categories) {
      groups.push(h('div', { class: 'event-group' },
        h('h3', {}, category),
        eventBox(`${category}.*`, h('span', {}, 'all ', h('code', {}, `${category}.*`))),
        items.map((item) => eventBox(item.type, h('code', { title: item.description || '' }, item.type)))));
    }
    const other = h('input', { type: 'text', id: 'events_other', value: [...chosen].join(', '), placeholder: 'e.g. invoice.*' });
    fieldError.events = h('p', { class: 'error', id: 'events-error' });
    fieldError.events.hidden = true;
    const events = h('fieldset', { id: 'events' },
      h('legend', {}, 'Events'),
      h('p', { class: 'hint muted' }, 'Choose what this endpoint receives.'),
      everything,
      h('div', { class: 'event-groups' }, groups),
      h('div', { class: 'field' }, h('label', { for: 'events_other' }, 'Other patterns (comma-separated)'), other),
      fieldError.events);

    // Custom headers: name/value rows. Masked values ("***") are kept as stored.
    const headerRows = h('div', { class: 'header-rows' });
    const addHeader = (name, value) => {
      const row = h('div', { class: 'header-row' },
        h('input', { type: 'text', 'aria-label': 'Header name', value: name || '', placeholder: 'X-Api-Version', class: 'header-name' }),
        h('input', { type: 'text', 'aria-label': 'Header value', value: value || '', placeholder: 'value', class: 'header-value' }),
        button('Remove', () => row.remove(), 'quiet'));
      headerRows.append(row);
    };
    for (const [n, v] of Object.entries((sub && sub.headers) || {})) addHeader(n, v);
    fieldError.headers = h('p', { class: 'error', id: 'headers-error' });
    fieldError.headers.hidden = true;

    const formError = h('div', {});
    const submit = h('button', { type: 'submit', class: 'button primary', id: 'save' }, sub ? 'Save changes' : 'Create subscription');
    const form = h('form', { class: 'stack', novalidate: true },
      field('url', 'Endpoint URL', url, 'Events are POSTed here, signed with the subscription secret.'),
      field('description', 'Description (optional)', description),
      events,
      h('fieldset', {}, h('legend', {}, 'Delivery'),
        h('label', { class: 'check' }, retry, h('span', {}, 'Retry failed attempts')),
        h('div', { class: 'row' },
          field('max_retries', 'Max retries (0–10)', maxRetries),
          field('timeout_seconds', 'Timeout, seconds (1–60)', timeout))),
      h('fieldset', {}, h('legend', {}, 'Custom headers'),
        h('p', { class: 'hint muted' }, 'Sent with every delivery; they never replace the signature headers.'),
        headerRows,
        h('div', { class: 'actions' }, button('Add header', () => addHeader(), '', { id: 'add-header' })),
        fieldError.headers),
      formError,
      h('div', { class: 'actions' }, submit, link(sub ? route('subscriptions', sub.id) : '#/subscriptions', 'Cancel', { class: 'button quiet' })));

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      for (const el of Object.values(fieldError)) { el.hidden = true; el.replaceChildren(); }
      for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
      formError.replaceChildren();
      const patterns = boxes.filter((b) => b.checked).map((b) => b.value)
        .concat(other.value.split(',').map((s) => s.trim()).filter(Boolean));
      const headers = {};
      for (const row of headerRows.children) {
        const name = row.querySelector('.header-name').value.trim();
        if (name) headers[name] = row.querySelector('.header-value').value;
      }
      const body = {
        url: url.value.trim(),
        description: description.value.trim() ? description.value : null,
        events: patterns,
        headers,
        retry_enabled: retry.checked,
        max_retries: Number.parseInt(maxRetries.value, 10),
        timeout_seconds: Number.parseInt(timeout.value, 10),
      };
      if (!sub && body.description === null) delete body.description;
      await busy(submit, async () => {
        try {
          if (sub) {
            await api('PATCH', `/webhooks/subscriptions/${encodeURIComponent(sub.id)}`, body);
            toast('Changes saved.');
            location.hash = route('subscriptions', sub.id);
          } else {
            const created = await api('POST', '/webhooks/subscriptions', body);
            // Shown once on the next screen, then forgotten.
            freshSecret = { id: created.id, secret: created.secret };
            location.hash = route('subscriptions', created.id);
          }
        } catch (err) {
          if (err.handled) return;
          const name = err.details && String(err.details.field || '').split(/[.[]/)[0];
          if (name && fieldError[name]) {
            replace(fieldError[name], err.message);
            fieldError[name].hidden = false;
            const input = document.getElementById(name);
            if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
          } else {
            replace(formError, inlineError(err));
          }
        }
      });
    });

    page(
      h('div', { class: 'page-head' }, h('div', {},
        h('div', { class: 'crumbs' }, link('#/subscriptions', 'Subscriptions'), sub ? [' › ', link(route('subscriptions', sub.id), 'Subscription')] : null),
        h('h1', {}, sub ? 'Edit subscription' : 'New subscription'))),
      h('section', { class: 'panel' }, form));
    url.focus();
  }

  // ---------------------------------------------------------------- delivery log

  function deliveryStatusCell(d) {
    return badge(d.status);
  }

  function lastResponse(d) {
    if (d.last_status_code) return h('span', { class: 'mono' }, `HTTP ${d.last_status_code}`);
    if (d.last_error) return h('span', { class: 'cell-sub break' }, d.last_error);
    return h('span', { class: 'muted' }, '—');
  }

  /**
   * A delivery log with filters and "load more": a subscription's (when
   * `subscription` is given) or the tenant's. Uses the tenant-wide route when
   * the server has it (it filters by time too), else the subscription's.
   */
  function deliveryLog(container, { subscription, token }) {
    const tenantWide = features.tenantLog;
    const status = h('select', { id: 'filter-status' }, h('option', { value: '' }, 'Any status'), STATUSES.map((s) => h('option', { value: s }, s)));
    const eventType = h('select', { id: 'filter-event-type' }, h('option', { value: '' }, 'Any event type'),
      (catalog || []).map((e) => h('option', { value: e.type }, e.type)));
    const since = h('input', { type: 'datetime-local', id: 'filter-since', step: 1 });
    const until = h('input', { type: 'datetime-local', id: 'filter-until', step: 1 });
    const labelled = (id, text, input) => h('div', { class: 'field' }, h('label', { for: id }, text), input);
    const subscriptionsById = new Map();
    if (subscription) subscriptionsById.set(subscription.id, subscription);
    const rows = h('tbody', {});
    const more = h('div', { class: 'more' });
    const errors = h('div', {});
    const columns = ['Status', 'Event', ...(subscription ? [] : ['Subscription']), 'Attempts', 'Last response', 'Created'];
    const table = h('table', { class: 'list', id: 'deliveries' },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))), rows);
    const empty = h('div', { class: 'empty', id: 'deliveries-empty' });
    empty.hidden = true;
    const refresh = button('Refresh', () => reload(), '', { id: 'refresh-log' });
    const bulk = !subscription && features.bulkRetry ? button('Retry failed…', () => bulkRetryDialog(), '', { id: 'bulk-retry' }) : null;
    const filters = h('form', { class: 'filters', role: 'search' },
      labelled('filter-status', 'Status', status),
      labelled('filter-event-type', 'Event type', eventType),
      tenantWide ? labelled('filter-since', 'Since', since) : null,
      tenantWide ? labelled('filter-until', 'Until', until) : null);
    for (const el of [status, eventType, since, until]) el.addEventListener('change', () => reload());
    filters.addEventListener('submit', (e) => { e.preventDefault(); reload(); });
    replace(container,
      h('div', { class: 'panel-head' }, h('h2', { id: 'log-title' }, subscription ? 'Deliveries' : 'All deliveries'), h('div', { class: 'actions' }, bulk, refresh)),
      filters, errors, table, empty, more);

    let pages = 0;
    let loading = false;
    /** Set when this log gave way to another (a fallback): its timer stops. */
    let retired = false;
    const path = (cursor) => {
      const q = new URLSearchParams({ limit: '25' });
      if (status.value) q.set('status', status.value);
      if (eventType.value) q.set('event_type', eventType.value);
      if (tenantWide) {
        if (subscription) q.set('subscription_id', subscription.id);
        if (toIso(since.value)) q.set('since', toIso(since.value));
        if (toIso(until.value)) q.set('until', toIso(until.value));
      }
      if (cursor) q.set('cursor', cursor);
      return tenantWide
        ? `/webhooks/deliveries?${q}`
        : `/webhooks/subscriptions/${encodeURIComponent(subscription.id)}/deliveries?${q}`;
    };

    const row = (d) => {
      const href = route('deliveries', d.id);
      const sub = subscriptionsById.get(d.subscription_id);
      const tr = h('tr', { class: `clickable delivery ${d.status}`, 'data-id': d.id, 'data-status': d.status },
        cell('Status', deliveryStatusCell(d)),
        cell('Event', h('div', { class: 'cell-main' }, link(href, d.event_type)), h('div', { class: 'cell-sub mono break' }, d.event_id)),
        subscription ? null : cell('Subscription',
          link(route('subscriptions', d.subscription_id), sub ? sub.url : d.subscription_id, { class: 'mono break cell-sub' })),
        cell('Attempts', String(d.attempt_count)),
        cell('Last response', lastResponse(d)),
        cell('Created', when(d.created_at)));
      tr.addEventListener('click', (e) => { if (!e.target.closest('a,button')) location.hash = href; });
      return tr;
    };

    async function load(cursor) {
      const data = await api('GET', path(cursor));
      if (!stillOn(token)) return;
      if (!cursor) rows.replaceChildren();
      errors.replaceChildren();
      pages = cursor ? pages + 1 : 1;
      for (const d of data.items) rows.append(row(d));
      const none = rows.children.length === 0;
      table.hidden = none;
      empty.hidden = !none;
      if (none) {
        const filtered = status.value || eventType.value || since.value || until.value;
        replace(empty, h('h2', {}, 'No deliveries'),
          h('p', {}, filtered ? 'Nothing matches these filters.' : subscription
            ? 'When an event this subscription listens to is published, its delivery shows up here. Try "Send test event".'
            : 'Deliveries appear here as events are published to your subscriptions.'));
      }
      more.replaceChildren();
      if (data.next_cursor) {
        more.append(button('Load more', (e) => busy(e.currentTarget, () => load(data.next_cursor).catch(showErr)), '', { id: 'load-more' }));
      }
    }

    const showErr = (err) => {
      if (err.handled || !stillOn(token)) return;
      replace(errors, inlineError(err));
    };

    async function reload() {
      if (loading) return;
      loading = true;
      try {
        await load(null);
      } catch (err) {
        if (tenantWide && (err.status === 404 || err.status === 405)) {
          // The OpenAPI document promised a route this server lacks: fall back.
          features.tenantLog = false;
          retired = true;
          nav.querySelector('[data-nav="deliveries"]').hidden = true;
          if (subscription) deliveryLog(container, { subscription, token });
          else replace(container, h('p', { class: 'notice' }, 'This server has no tenant-wide delivery log yet. Open a subscription to see its deliveries.'));
          return;
        }
        showErr(err);
      } finally {
        loading = false;
      }
    }

    async function start() {
      if (!subscription) {
        // Show subscription URLs rather than ids (first 100).
        try {
          const subs = await api('GET', '/webhooks/subscriptions?limit=100');
          for (const s of subs.items) subscriptionsById.set(s.id, s);
        } catch (_) { /* ids are shown instead */ }
      }
      await reload();
    }

    function bulkRetryDialog() {
      const from = h('input', { type: 'datetime-local', id: 'bulk-since', step: 1, required: true });
      const to = h('input', { type: 'datetime-local', id: 'bulk-until', step: 1 });
      const progress = h('div', {});
      const dialog = modal('Retry failed deliveries',
        h('div', { class: 'stack' },
          h('p', {}, 'Queue a new attempt for every failed delivery in a time window', eventType.value ? ` of ${eventType.value}` : '', '.'),
          labelled('bulk-since', 'Since (your local time)', from),
          labelled('bulk-until', 'Until (optional; now if empty)', to),
          progress),
        'Retry failed', 'primary',
        async (error) => {
          const body = { since: toIso(from.value) };
          if (!body.since) {
            replace(error, h('p', { class: 'inline-error' }, 'Choose when the window starts.'));
            return false;
          }
          if (to.value) body.until = toIso(to.value);
          if (eventType.value) body.event_type = eventType.value;
          const job = await api('POST', '/webhooks/deliveries/retry', body);
          replace(progress, jobProgress(job));
          dialog.querySelector('#dialog-confirm').hidden = true;
          replace(dialog.querySelector('#dialog-cancel'), 'Close');
          return false;
        });
    }

    // Keep the first page fresh while nobody is paging or typing in it.
    every(4000, () => {
      if (retired || !stillOn(token) || pages !== 1 || document.hidden || container.contains(document.activeElement)) return;
      reload();
    });
    start();
  }

  async function tenantLog() {
    const token = screen;
    await loadCatalog();
    if (!stillOn(token)) return;
    const log = h('section', { class: 'panel', 'aria-labelledby': 'log-title' });
    page(h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Delivery log'),
      h('p', { class: 'sub' }, 'Every delivery to every subscription, newest first.'))), log);
    if (!features.tenantLog) {
      replace(log, h('p', { class: 'notice' }, 'This server has no tenant-wide delivery log yet. Open a subscription to see its deliveries.'),
        link('#/subscriptions', 'Subscriptions'));
      return;
    }
    deliveryLog(log, { subscription: null, token });
  }

  // ---------------------------------------------------------------- delivery detail

  function pretty(payload) {
    let value = payload;
    if (typeof value === 'string') {
      try { value = JSON.parse(value); } catch (_) { return value; }
    }
    return JSON.stringify(value, null, 2);
  }

  function headerTable(headers) {
    const entries = Array.isArray(headers) ? headers : Object.entries(headers || {});
    if (!entries.length) return h('p', { class: 'muted' }, 'none');
    return h('table', { class: 'headers' }, h('tbody', {},
      entries.map(([name, value]) => h('tr', {}, h('th', { scope: 'row' }, name), h('td', {}, Array.isArray(value) ? value.join(', ') : String(value))))));
  }

  /** Words for the stable outcome codes of an attempt. */
  const OUTCOMES = {
    success: 'succeeded',
    http_status: 'failed',
    redirect: 'redirect, not followed',
    timeout: 'timed out',
    connect: 'connection failed',
    dns: 'DNS lookup failed',
    tls: 'TLS failed',
    blocked_address: 'blocked address',
    request: 'request failed',
    body: 'reading the answer failed',
    internal: 'internal error',
  };

  function attemptCard(a) {
    const ok = a.outcome ? a.outcome === 'success' : a.status_code >= 200 && a.status_code < 300;
    const outcome = OUTCOMES[a.outcome] || a.outcome || (ok ? 'succeeded' : 'failed');
    return h('article', { class: 'attempt', 'data-attempt': a.attempt },
      h('div', { class: 'attempt-head' },
        h('h3', {}, `Attempt ${a.attempt}`),
        badge(outcome, ok ? 'ok' : 'bad'),
        a.status_code ? h('span', { class: 'mono status-code' }, `HTTP ${a.status_code}`) : null,
        h('span', { class: 'muted' }, `${a.duration_ms} ms`),
        when(a.created_at)),
      a.error ? h('p', { class: 'error-text' }, a.error) : null,
      a.response_body
        ? h('details', { open: true }, h('summary', {}, 'Response body'), h('pre', { class: 'code wrap response-body' }, a.response_body))
        : h('p', { class: 'muted' }, 'No response body.'),
      a.request_headers ? h('details', { class: 'request-headers' }, h('summary', {}, 'Request headers'), headerTable(a.request_headers)) : null,
      a.response_headers ? h('details', { class: 'response-headers' }, h('summary', {}, 'Response headers'), headerTable(a.response_headers)) : null);
  }

  async function deliveryDetail(id) {
    const token = screen;
    const path = `/webhooks/deliveries/${encodeURIComponent(id)}`;
    let d;
    try {
      d = await api('GET', path);
    } catch (err) {
      if (stillOn(token)) failed(err);
      return;
    }
    if (!stillOn(token)) return;
    let sub = null;
    try {
      sub = await api('GET', `/webhooks/subscriptions/${encodeURIComponent(d.subscription_id)}`);
    } catch (_) { /* deleted: shown by id */ }
    if (!stillOn(token)) return;

    const summary = h('dl', { class: 'facts' });
    const attempts = h('div', { class: 'attempts', id: 'attempts' });
    const statusSlot = h('span', { id: 'delivery-status' });
    const messages = h('div', {});
    const draw = (delivery) => {
      replace(statusSlot, badge(delivery.status));
      replace(summary,
        h('dt', {}, 'Delivery ID'), h('dd', { class: 'mono' }, delivery.id),
        h('dt', {}, 'Event'), h('dd', {}, h('span', { class: 'mono' }, delivery.event_id),
          features.eventLookup ? [' ', link(route('events', delivery.event_id), 'look up', { id: 'event-lookup' })] : null),
        h('dt', {}, 'Subscription'), h('dd', {}, link(route('subscriptions', delivery.subscription_id), sub ? sub.url : delivery.subscription_id, { class: 'mono break' }),
          sub ? null : h('span', { class: 'muted' }, ' (deleted)')),
        h('dt', {}, 'Attempts'), h('dd', { id: 'attempt-count' }, String(delivery.attempt_count)),
        h('dt', {}, 'Last response'), h('dd', {}, lastResponse(delivery)),
        delivery.next_attempt_at ? [h('dt', {}, 'Next attempt'), h('dd', {}, whenFull(delivery.next_attempt_at))] : null,
        h('dt', {}, 'Created'), h('dd', {}, whenFull(delivery.created_at)),
        h('dt', {}, 'Updated'), h('dd', {}, whenFull(delivery.updated_at)));
      const list = [...(delivery.attempts || [])].sort((x, y) => y.attempt - x.attempt);
      replace(attempts, list.length ? list.map(attemptCard) : h('p', { class: 'muted', id: 'no-attempts' }, 'No attempt yet: it is queued.'));
    };
    const retry = button('Retry now', (e) => busy(e.currentTarget, async () => {
      messages.replaceChildren();
      try {
        const queued = await api('POST', `${path}/retry`);
        toast(`Retry queued: attempt ${queued.attempt_count + 1}.`);
        d = await api('GET', path);
        if (stillOn(token)) draw(d);
      } catch (err) {
        if (!err.handled && stillOn(token)) replace(messages, inlineError(err));
      }
    }), 'primary', { id: 'retry' });

    const payload = d.payload !== undefined && d.payload !== null
      ? h('section', { class: 'panel', 'aria-labelledby': 'payload-title' }, h('h2', { id: 'payload-title' }, 'Payload'), h('pre', { class: 'code', id: 'payload' }, pretty(d.payload)))
      : null;
    page(
      h('div', { class: 'page-head' },
        h('div', {},
          h('div', { class: 'crumbs' }, link('#/subscriptions', 'Subscriptions'), ' › ',
            link(route('subscriptions', d.subscription_id), sub ? short(sub.url, 48) : 'Subscription'), ' › Delivery'),
          h('h1', {}, d.event_type),
          h('p', { class: 'sub' }, statusSlot)),
        h('div', { class: 'actions' }, retry)),
      messages,
      h('section', { class: 'panel', 'aria-labelledby': 'summary-title' }, h('h2', { id: 'summary-title' }, 'Summary'), summary),
      payload,
      h('section', { class: 'panel', 'aria-labelledby': 'attempts-title' }, h('h2', { id: 'attempts-title' }, 'Attempts'), attempts));
    draw(d);
    // While work is outstanding, follow it.
    every(2000, async () => {
      if (!stillOn(token) || document.hidden) return;
      if (d.status === 'succeeded' || (d.status === 'failed' && !d.next_attempt_at)) {
        // Finished: one more look in case a retry was queued elsewhere, but rarely.
        if (Date.now() - Date.parse(d.updated_at) > 30000) return;
      }
      try {
        const next = await api('GET', path);
        if (!stillOn(token)) return;
        const changed = next.updated_at !== d.updated_at || next.attempt_count !== d.attempt_count || next.status !== d.status
          || (next.attempts || []).length !== (d.attempts || []).length;
        d = next;
        if (changed) draw(d);
      } catch (_) { /* next tick */ }
    });
  }

  // ---------------------------------------------------------------- event lookup

  async function eventLookup(eventId) {
    const token = screen;
    const input = h('input', { type: 'search', id: 'event-id', placeholder: 'evt_…', value: eventId || '', autocomplete: 'off', spellcheck: 'false' });
    const result = h('div', {});
    const form = h('form', { class: 'filters', role: 'search' },
      h('div', { class: 'field' }, h('label', { for: 'event-id' }, 'Event ID'), input),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'button primary' }, 'Look up')));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const value = input.value.trim();
      if (value) location.hash = route('events', value);
    });
    page(h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Event lookup'),
      h('p', { class: 'sub' }, 'Find an event by its id and see where it was delivered.'))),
    h('section', { class: 'panel' }, form), result);
    if (!features.eventLookup) {
      replace(result, h('p', { class: 'notice' }, 'This server has no event lookup yet. A delivery page shows its event id and payload.'));
      return;
    }
    if (!eventId) { input.focus(); return; }
    replace(result, h('p', { class: 'loading' }, 'Loading…'));
    let ev;
    try {
      ev = await api('GET', `/events/${encodeURIComponent(eventId)}`);
    } catch (err) {
      if (!stillOn(token) || err.handled) return;
      replace(result, err.status === 404
        ? h('div', { class: 'panel empty' }, h('h2', {}, 'No such event'), h('p', {}, 'No event of yours has this id.'))
        : inlineError(err));
      return;
    }
    if (!stillOn(token)) return;
    const deliveries = ev.deliveries || [];
    replace(result,
      h('section', { class: 'panel', 'aria-labelledby': 'event-title' },
        h('h2', { id: 'event-title' }, ev.event_type),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Event ID'), h('dd', { class: 'mono' }, ev.event_id),
          h('dt', {}, 'Published'), h('dd', {}, whenFull(ev.created_at)))),
      h('section', { class: 'panel', 'aria-labelledby': 'event-deliveries-title' },
        h('h2', { id: 'event-deliveries-title' }, 'Deliveries'),
        deliveries.length
          ? h('table', { class: 'list', id: 'event-deliveries' },
            h('thead', {}, h('tr', {}, ['Status', 'Delivery', 'Attempts', 'Last response'].map((c) => h('th', { scope: 'col' }, c)))),
            h('tbody', {}, deliveries.map((d) => h('tr', {},
              cell('Status', badge(d.status)),
              cell('Delivery', link(route('deliveries', d.id), d.id, { class: 'mono' })),
              cell('Attempts', String(d.attempt_count)),
              cell('Last response', lastResponse(d))))))
          : h('p', { class: 'muted' }, 'No subscription matched this event.')),
      ev.payload !== undefined
        ? h('section', { class: 'panel', 'aria-labelledby': 'event-payload-title' }, h('h2', { id: 'event-payload-title' }, 'Payload'), h('pre', { class: 'code', id: 'payload' }, pretty(ev.payload)))
        : null);
  }

  // ---------------------------------------------------------------- start

  async function start() {
    await detectFeatures();
    render();
    main.focus({ preventScroll: true });
  }

  signOutButton.addEventListener('click', () => signOut('Signed out.'));
  window.addEventListener('hashchange', () => { bannerBox.hidden = true; render(); });
  if (signedIn()) start();
  else showSignIn();
})();
