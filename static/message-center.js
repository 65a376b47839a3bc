// The Message Center: the Customer Messages screen of Switchboard, on switchboard-client.js.
import { SwitchboardClient, ApiError } from './switchboard-client.js';
import { h, formatPhone, formatTime, messageSummary, imageAttachments } from './ui.js';
import { Presence, avatars, displayName, typingText } from './presence.js';

const TOKEN_KEY = 'switchboard.token';
const SOUND_KEY = 'switchboard.sound'; // localStorage: remembered per browser
const TITLE = 'Message Center — Switchboard';
// How long a pop-up stays (hovering it keeps it): a customer message, an error, anything else.
const TOAST_MS = { customer: 10000, error: 8000, info: 4000 };
const MAX_TOASTS = 4;
// A tab that claimed a message's alert keeps the claim this long (the other tabs get it
// within milliseconds; a replay after a reconnect may come later).
const ALERT_HOLD_MS = 120000;
// A hidden tab lets a visible one claim an alert first.
const HIDDEN_TAB_DEFER_MS = 300;

const $ = (id) => document.getElementById(id);

const state = {
  client: null,
  me: null,
  presence: null, // who else is in which thread, and what this tab says (presence.js)
  threads: new Map(), // id -> Thread
  folders: new Map(), // id -> Folder | Promise
  next: null,
  view: { resourceId: '', unreadOnly: false },
  selectedId: null,
  detail: null, // {kind: 'thread', id} | {kind: 'folder', id}
  loading: false,
  queued: [], // events that arrived while the list was loading
  reloadTimer: null,
  countTimer: null,
  unread: 0,
  names: new Map(), // user id -> display name (the resources, and me)
  drafts: new Map(), // thread id -> a reply being written (kept across switching threads)
  everConnected: false,
  countdownTimer: null,
  sound: localStorage.getItem(SOUND_KEY) === 'on',
  alerts: 0, // alerts this tab gave (pop-up, sound or desktop notification), for the tests
  decided: 0, // new messages whose alert this tab has decided on (given or not)
  sounds: 0, // sounds this tab played
};

// The tabs of this browser tell each other what one of them did (a thread opened, the sound
// switched); each tab has its own connection, so read state and the badge come from the hub.
const channel = 'BroadcastChannel' in window ? new BroadcastChannel('switchboard.message-center') : null;

// ---------------------------------------------------------------------------------------
// Sign in / out

function start() {
  $('signin-form').addEventListener('submit', onSignIn);
  $('dev-signin').addEventListener('submit', onDevSignIn);
  offerDevSignIn();
  $('sign-out').addEventListener('click', signOut);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token).catch(() => showSignIn());
  else showSignIn();
}

function showSignIn(message) {
  $('signin').hidden = false;
  $('workspace').hidden = true;
  for (const id of ['ops-nav', 'connection', 'whoami', 'sign-out', 'new-messages', 'statusbar', 'outage']) $(id).hidden = true;
  setFavicon(0);
  const err = $('signin-error');
  err.hidden = !message;
  err.textContent = message || '';
  document.title = TITLE;
  $('token-input').focus();
}

async function onSignIn(ev) {
  ev.preventDefault();
  const token = $('token-input').value.trim().replace(/^Bearer\s+/i, '');
  if (!token) return;
  try {
    await signIn(token);
    $('token-input').value = '';
  } catch (e) {
    const why =
      e instanceof ApiError && e.status === 401
        ? 'The hub did not accept this token (malformed, badly signed or expired).'
        : e instanceof ApiError && e.status === 403
          ? 'This token may not use the Message Center (it needs the user or admin role).'
          : `Could not sign in: ${e.message}`;
    showSignIn(why);
  }
}

/** Shows the development sign-in when the hub offers it (dev secret on loopback only). */
async function offerDevSignIn() {
  try {
    const r = await fetch('/api/v1/dev/token');
    $('dev-signin').hidden = !r.ok;
  } catch {
    $('dev-signin').hidden = true;
  }
}

async function onDevSignIn(ev) {
  ev.preventDefault();
  const body = {
    sub: $('dev-sub').value.trim(),
    tenant: $('dev-tenant').value.trim(),
    roles: [$('dev-role').value],
    locations: $('dev-locations').value.split(',').map((l) => l.trim()).filter(Boolean),
  };
  try {
    const r = await fetch('/api/v1/dev/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const answer = await r.json();
    if (!r.ok) throw new Error(answer.detail || `HTTP ${r.status}`);
    await signIn(answer.token);
  } catch (e) {
    showSignIn(`Could not sign in: ${e.message}`);
  }
}

async function signIn(token) {
  const client = new SwitchboardClient({
    token: () => sessionStorage.getItem(TOKEN_KEY) || token,
    onResync: () => reloadAll(),
  });
  const me = await client.api('GET', '/me');
  sessionStorage.setItem(TOKEN_KEY, token);
  state.client = client;
  state.me = me;
  state.everConnected = false;
  state.names.set(me.user_id, me.name || me.user_id);
  window.__switchboard = { client, state }; // for the end-to-end tests and debugging
  $('signin').hidden = true;
  $('workspace').hidden = false;
  for (const id of ['ops-nav', 'connection', 'whoami', 'sign-out', 'new-messages', 'statusbar']) $(id).hidden = false;
  $('whoami').replaceChildren(h('span', { class: 'name' }, me.name || me.user_id), h('span', { class: 'tenant' }, ` · ${me.tenant}`));
  $('whoami').title = `Locations: ${me.locations.join(', ')}`;
  setSubscribe(me.subscribe_all);
  setUnread(me.unread_count);
  wireClient(client);
  state.presence = new Presence(client, { selfId: me.user_id, onChange: renderPresence });
  client.connect();
  await Promise.all([loadThreads(), loadResources()]);
}

function signOut() {
  state.presence?.stop();
  state.presence = null;
  state.client?.close();
  state.client = null;
  sessionStorage.removeItem(TOKEN_KEY);
  state.threads.clear();
  state.folders.clear();
  state.detail = null;
  state.selectedId = null;
  $('thread-rows').replaceChildren();
  $('toasts').replaceChildren();
  closeDetail();
  showSignIn();
}

// ---------------------------------------------------------------------------------------
// The websocket

function wireClient(client) {
  client.on('state', renderConnection);
  client.on('hello', (hello) => {
    setUnread(hello.unread_count);
    // Back after an outage: reload what is on screen (the list, the open conversation or
    // folder); the replay brings the pop-ups of what was missed.
    if (state.everConnected) reloadOnScreen();
    state.everConnected = true;
  });
  client.on('event', (frame) => {
    if (state.loading) state.queued.push(frame);
    applyEvent(frame, true);
  });
  client.on('resync', () => toast({ title: 'Reloaded', text: 'Missed too much while offline: the list was reloaded.' }));
  client.on('auth', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn('Your session ended (the token expired or was revoked). Paste a fresh token.');
  });
}

function renderConnection(s, detail) {
  const el = $('connection');
  el.dataset.state = s;
  const label = {
    idle: 'Not connected',
    connecting: state.everConnected ? 'Reconnecting…' : 'Connecting…',
    open: 'Live',
    reconnecting: 'Offline',
    closed: 'Disconnected',
    unauthorized: 'Signed out',
  }[s];
  el.querySelector('.label').textContent = label || s;
  el.title = s === 'reconnecting' ? `Attempt ${detail.attempt}; missed messages are replayed on reconnect` : '';
  renderOutage(s, detail);
}

/** The outage banner: shown while a connection that was up is down, with a live countdown to
 * the next attempt and "Retry now". */
function renderOutage(s, detail) {
  const banner = $('outage');
  const down = state.everConnected && (s === 'reconnecting' || s === 'connecting');
  banner.hidden = !down;
  clearInterval(state.countdownTimer);
  state.countdownTimer = null;
  if (!down) return;
  banner.dataset.attempt = String(detail?.attempt ?? '');
  const countdown = $('outage-countdown');
  if (s === 'connecting') {
    countdown.textContent = 'Reconnecting…';
    return;
  }
  const tick = () => {
    const left = Math.max(0, Math.ceil(((state.client?.retryAt ?? Date.now()) - Date.now()) / 1000));
    countdown.textContent = `Retrying in ${left} s.`;
    countdown.dataset.seconds = String(left);
  };
  tick();
  state.countdownTimer = setInterval(tick, 250);
}

function applyEvent(frame, live) {
  const d = frame.data || {};
  switch (frame.type) {
    case 'message.new':
      upsertThread(d.thread, { unknown: 'reload' });
      appendToDetail(d.message);
      if (live) alertFor(d.thread, d.message);
      break;
    case 'message.sent':
      upsertThread(d.thread, { unknown: 'reload' });
      appendToDetail(d.message);
      break;
    case 'thread.read': {
      const t = state.threads.get(d.thread_id);
      if (t) upsertThread({ ...t, unread: false, unread_count: 0 });
      // Someone read it: its pop-ups are stale.
      for (const el of $('toasts').querySelectorAll('.toast.customer')) if (el.dataset.threadId === d.thread_id) el.remove();
      break;
    }
    case 'thread.unread': {
      const t = state.threads.get(d.thread_id);
      if (t) upsertThread({ ...t, unread: true, unread_count: Math.max(1, t.unread_count) });
      if (t) refreshThread(d.thread_id);
      break;
    }
    case 'thread.assigned':
      upsertThread(d.thread, { unknown: 'reload' });
      // The assignment may move the thread into or out of this view.
      scheduleReload();
      break;
    case 'unread.count':
      setUnread(d.count);
      scheduleCountCheck();
      break;
    case 'images.linked':
      // No pop-up: whoever linked them was told by their own action; an open folder shows them.
      if (state.detail?.kind === 'folder' && state.detail.id === d.folder_id) showFolder(d.folder_id, state.detail.tab);
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------
// The list

function listQuery(before) {
  const p = new URLSearchParams({ limit: '50' });
  if (state.view.resourceId) {
    p.set('view', 'resource');
    p.set('resource_id', state.view.resourceId);
  } else p.set('view', 'mine');
  if (state.view.unreadOnly) p.set('unread_only', 'true');
  if (before) p.set('before', before);
  return `/threads?${p}`;
}

async function loadThreads() {
  const client = state.client;
  if (!client) return;
  state.loading = true;
  state.queued = [];
  try {
    const page = await client.api('GET', listQuery());
    if (client !== state.client) return;
    state.threads.clear();
    for (const t of page.threads) state.threads.set(t.id, t);
    state.next = page.next;
    // Events that came while the page was on its way are applied again over it.
    for (const frame of state.queued) applyEvent(frame, false);
  } catch (e) {
    if (!isOffline(e)) toast({ title: 'Could not load messages', text: e.detail || e.message, kind: 'error' });
  } finally {
    state.loading = false;
    state.queued = [];
  }
  renderList();
}

async function loadMore() {
  if (!state.next) return;
  const page = await state.client.api('GET', listQuery(state.next));
  for (const t of page.threads) if (!state.threads.has(t.id)) state.threads.set(t.id, t);
  state.next = page.next;
  renderList();
}

function scheduleReload() {
  clearTimeout(state.reloadTimer);
  state.reloadTimer = setTimeout(loadThreads, 300);
}

async function reloadAll() {
  if (!state.client) return;
  const me = await state.client.api('GET', '/me');
  state.me = me;
  setSubscribe(me.subscribe_all);
  setUnread(me.unread_count);
  await loadThreads();
  await refreshDetail();
}

/** After a reconnect: everything on screen again from the hub (a draft reply is kept). */
async function reloadOnScreen() {
  try {
    await Promise.all([reloadAll(), loadResources()]);
  } catch (e) {
    if (!isOffline(e)) toast({ title: 'Could not reload', text: e.detail || e.message, kind: 'error' });
  }
}

/** Whether an API call failed because the hub could not be reached (not an answer of its). */
function isOffline(e) {
  return !(e instanceof ApiError);
}

function failure(e) {
  return isOffline(e) ? 'the hub cannot be reached. This reloads by itself when the connection is back.' : e.detail || e.message;
}

/**
 * The badge is the hub's count over this user's list: when it disagrees with the list on
 * screen (a preference or folder change moved threads in or out without an event for each),
 * the list is reloaded. Checked a moment after the last count, when related events are in.
 */
function scheduleCountCheck() {
  clearTimeout(state.countTimer);
  state.countTimer = setTimeout(() => {
    if (state.view.resourceId || state.loading) return;
    let listed = 0;
    for (const t of state.threads.values()) listed += t.unread ? t.unread_count : 0;
    if (state.unread < listed || (state.unread > listed && !state.next)) loadThreads();
  }, 150);
}

function upsertThread(thread, { unknown } = {}) {
  if (!thread) return;
  const known = state.threads.has(thread.id);
  if (!known && unknown === 'reload' && state.view.resourceId) {
    scheduleReload(); // whether it belongs to this resource's view is the hub's call
    return;
  }
  state.threads.set(thread.id, thread);
  renderList();
  if (state.detail?.kind === 'thread' && state.detail.id === thread.id) renderThreadHeader(thread);
}

async function refreshThread(id) {
  try {
    const t = await state.client.api('GET', `/threads/${encodeURIComponent(id)}`);
    if (state.threads.has(id)) upsertThread(t);
  } catch {
    /* the list stays as the event left it */
  }
}

function sortedThreads() {
  return [...state.threads.values()]
    .filter((t) => !state.view.unreadOnly || t.unread)
    .sort((a, b) => Date.parse(b.last_message_at) - Date.parse(a.last_message_at) || (a.id < b.id ? 1 : -1));
}

function renderList() {
  const tbody = $('thread-rows');
  const hadFocus = tbody.contains(document.activeElement);
  const threads = sortedThreads();
  if (state.selectedId && !state.threads.has(state.selectedId)) state.selectedId = null;
  const rows = threads.map((t) => renderRow(t));
  tbody.replaceChildren(...rows);
  $('thread-list').setAttribute('aria-rowcount', String(threads.length + 1));
  $('list-empty').hidden = threads.length > 0;
  $('list-empty').textContent = emptyText();
  $('load-more').hidden = !state.next;
  // Roving tabindex: the selected row (or the first) is the one Tab reaches.
  const focusRow = rows.find((r) => r.dataset.threadId === state.selectedId) || rows[0];
  if (focusRow) focusRow.tabIndex = 0;
  if (hadFocus && focusRow) focusRow.focus({ preventScroll: true });
}

/** What an empty list means, in this view. */
function emptyText() {
  const who = state.view.resourceId ? nameOf(state.view.resourceId) : null;
  if (state.view.unreadOnly) return who ? `No unread messages in ${who}'s list.` : 'No unread messages for you.';
  if (who) return `No messages in ${who}'s list.`;
  return state.me?.subscribe_all
    ? 'No customer messages at your locations yet.'
    : 'No messages for you yet. You get the threads of folders where you are the sales or service resource; turn on "Subscribe to all" to see every thread of your locations.';
}

function nameOf(userId) {
  return state.names.get(userId) || userId;
}

function renderRow(t) {
  const m = t.last_message || {};
  const folder = t.folder_id
    ? h('a', { href: '#', class: 'folder-link', 'data-folder-id': t.folder_id }, folderLabel(t.folder_id))
    : h('span', { class: 'unassigned' }, 'unassigned');
  const summary = messageSummary(m);
  const row = h(
    'tr',
    {
      class: `thread${t.unread ? ' unread' : ''}${t.id === state.selectedId ? ' selected' : ''}`,
      'data-thread-id': t.id,
      'data-unread': String(!!t.unread),
      'aria-selected': String(t.id === state.selectedId),
      tabindex: '-1',
      title: imageAttachments(m).length ? 'Double-click to view the image(s); right-click for actions' : 'Right-click for actions',
    },
    h(
      'td',
      { class: 'col-icon' },
      h(
        'span',
        { class: `msg-icon${t.unread ? ' is-unread' : ''}`, role: 'img', 'aria-label': t.unread ? 'Unread' : 'Read' },
        iconSvg(),
      ),
    ),
    h(
      'td',
      { class: 'col-message' },
      h(
        'div',
        { class: 'msg-text' },
        m.direction === 'outbound' ? h('span', { class: 'direction outbound', title: 'Our reply' }, '↩ ') : '',
        ...summary.filter((s) => s.kind !== 'attachments-note').map((s) => h('span', { class: s.kind }, s.text)),
      ),
      ...summary.filter((s) => s.kind === 'attachments-note').map((s) => h('span', { class: s.kind }, s.text)),
      rowPresence(t.id),
    ),
    h('td', { class: 'col-number' }, formatPhone(t.customer_number)),
    h('td', { class: 'col-folder' }, folder),
    h('td', { class: 'col-unread' }, t.unread_count ? h('span', { class: 'pill' }, String(t.unread_count)) : ''),
    h('td', { class: 'col-time' }, h('time', { datetime: t.last_message_at }, formatTime(t.last_message_at))),
  );
  return row;
}

/** Who else is in a thread, on its list row: initials, typing ones marked (null: nobody). */
function rowPresence(threadId) {
  const users = state.presence?.users(threadId) || [];
  if (!users.length) return null;
  const typing = users.some((u) => u.state === 'typing');
  return h('div', { class: 'row-presence' }, avatars(users), h('span', { class: 'presence-note' }, typing ? 'typing…' : 'viewing'));
}

/** Presence changed in `changed` threads (null: any): their rows, and the open conversation. */
function renderPresence(changed) {
  for (const r of $('thread-rows').rows) {
    const id = r.dataset.threadId;
    if (changed && !changed.has(id)) continue;
    const cell = r.querySelector('td.col-message');
    cell.querySelector('.row-presence')?.remove();
    const p = rowPresence(id);
    if (p) cell.append(p);
  }
  if (state.detail?.kind === 'thread' && (!changed || changed.has(state.detail.id))) renderConversationPresence(state.detail.id);
}

/** The open conversation's header (who else is here) and its "… is typing" line. */
function renderConversationPresence(threadId) {
  const users = state.presence?.users(threadId) || [];
  const box = $('thread-presence');
  if (box) {
    box.hidden = !users.length;
    box.replaceChildren(
      ...(users.length
        ? [
            avatars(users, { size: 'large' }),
            h('span', { class: 'presence-names' }, `Also here: ${users.map((u) => `${displayName(u)}${u.state === 'typing' ? ' (typing)' : ''}`).join(', ')}`),
          ]
        : []),
    );
  }
  const line = $('typing-indicator');
  if (line) {
    const text = typingText(users);
    if (line.textContent !== text) line.textContent = text;
    line.classList.toggle('active', !!text);
  }
}

function iconSvg() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', '18');
  svg.setAttribute('height', '18');
  svg.setAttribute('aria-hidden', 'true');
  const p = document.createElementNS(ns, 'path');
  p.setAttribute('fill', 'currentColor');
  p.setAttribute('d', 'M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z');
  svg.append(p);
  return svg;
}

function folderLabel(id) {
  const f = state.folders.get(id);
  if (f && !(f instanceof Promise)) return f.name;
  fetchFolder(id).then(() => renderList());
  return id;
}

function fetchFolder(id) {
  const cached = state.folders.get(id);
  if (cached) return Promise.resolve(cached);
  const p = state.client
    .api('GET', `/folders/${encodeURIComponent(id)}`)
    .then((f) => {
      state.folders.set(id, f);
      return f;
    })
    .catch(() => {
      state.folders.set(id, { id, name: id });
      return state.folders.get(id);
    });
  state.folders.set(id, p);
  return p;
}

async function folderName(id) {
  return (await fetchFolder(id)).name;
}

function rowOf(el) {
  return el?.closest?.('tr.thread');
}

function select(id, { focus = true, show = true } = {}) {
  state.selectedId = id;
  for (const r of $('thread-rows').rows) {
    const on = r.dataset.threadId === id;
    r.classList.toggle('selected', on);
    r.setAttribute('aria-selected', String(on));
    r.tabIndex = on ? 0 : -1;
    if (on && focus) r.focus();
  }
  if (show) showThread(id, { keepFocus: true });
  // The pop-ups of a conversation the user is looking at have done their job, in every tab.
  dropPopUps(id);
  channel?.postMessage({ type: 'opened', user: state.me?.user_id, threadId: id });
}

function dropPopUps(threadId) {
  for (const el of $('toasts').querySelectorAll('.toast.customer')) if (el.dataset.threadId === threadId) el.remove();
}

function wireList() {
  const tbody = $('thread-rows');
  tbody.addEventListener('click', (ev) => {
    const link = ev.target.closest('a.folder-link');
    if (link) {
      ev.preventDefault();
      showFolder(link.dataset.folderId);
      return;
    }
    const row = rowOf(ev.target);
    if (row) select(row.dataset.threadId);
  });
  tbody.addEventListener('dblclick', (ev) => {
    const row = rowOf(ev.target);
    if (row) openImages(row.dataset.threadId);
  });
  tbody.addEventListener('contextmenu', (ev) => {
    const row = rowOf(ev.target);
    if (!row) return;
    ev.preventDefault();
    select(row.dataset.threadId, { show: state.detail?.id !== row.dataset.threadId });
    openMenu(row.dataset.threadId, ev.clientX, ev.clientY);
  });
  tbody.addEventListener('keydown', (ev) => {
    const row = rowOf(ev.target);
    if (!row) return;
    const id = row.dataset.threadId;
    const rows = [...tbody.rows];
    const i = rows.indexOf(row);
    const go = (j) => {
      const r = rows[Math.max(0, Math.min(rows.length - 1, j))];
      if (r) select(r.dataset.threadId);
    };
    if ((ev.key === 'F10' && ev.shiftKey) || ev.key === 'ContextMenu') {
      ev.preventDefault();
      const rect = row.getBoundingClientRect();
      openMenu(id, rect.left + 40, rect.bottom);
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const action = { ArrowDown: 'down', ArrowUp: 'up', Home: 'home', End: 'end' }[ev.key];
    if (action) {
      ev.preventDefault();
      go(action === 'down' ? i + 1 : action === 'up' ? i - 1 : action === 'home' ? 0 : rows.length - 1);
      return;
    }
    const key = ev.key.toLowerCase();
    const map = { r: 'read', u: 'unread', f: 'assign', l: 'link', i: 'images', enter: 'open' };
    if (map[key]) {
      ev.preventDefault();
      runAction(map[key], id);
    }
  });
  $('load-more').addEventListener('click', loadMore);
  $('reload').addEventListener('click', () => reloadAll());
}

// ---------------------------------------------------------------------------------------
// Context menu and actions

let menuFor = null;
let menuReturnFocus = null;

function openMenu(threadId, x, y) {
  const menu = $('context-menu');
  menuFor = threadId;
  menuReturnFocus = document.activeElement;
  const t = state.threads.get(threadId);
  const setDisabled = (action, off) => {
    const li = menu.querySelector(`[data-action="${action}"]`);
    li.setAttribute('aria-disabled', String(!!off));
  };
  setDisabled('read', t && !t.unread);
  setDisabled('unread', t && t.unread);
  setDisabled('link', t && !t.folder_id);
  setDisabled('images', t && !imageAttachments(t.last_message).length);
  menu.hidden = false;
  const w = menu.offsetWidth;
  const hgt = menu.offsetHeight;
  menu.style.left = `${Math.max(4, Math.min(x, innerWidth - w - 4))}px`;
  menu.style.top = `${Math.max(4, Math.min(y, innerHeight - hgt - 4))}px`;
  const first = [...menu.querySelectorAll('[role=menuitem]')].find((li) => li.getAttribute('aria-disabled') !== 'true');
  first?.focus();
}

function closeMenu({ restoreFocus = true } = {}) {
  const menu = $('context-menu');
  if (menu.hidden) return;
  menu.hidden = true;
  if (restoreFocus && menuReturnFocus?.isConnected) menuReturnFocus.focus();
  else if (restoreFocus) select(menuFor, { show: false });
}

function wireMenu() {
  const menu = $('context-menu');
  menu.addEventListener('click', (ev) => {
    const li = ev.target.closest('[role=menuitem]');
    if (!li || li.getAttribute('aria-disabled') === 'true') return;
    const id = menuFor;
    closeMenu();
    runAction(li.dataset.action, id);
  });
  menu.addEventListener('keydown', (ev) => {
    const items = [...menu.querySelectorAll('[role=menuitem]')].filter((li) => li.getAttribute('aria-disabled') !== 'true');
    const i = items.indexOf(document.activeElement);
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      ev.preventDefault();
      const j = ev.key === 'ArrowDown' ? (i + 1) % items.length : (i - 1 + items.length) % items.length;
      items[j]?.focus();
    } else if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      document.activeElement?.click();
    } else if (ev.key === 'Escape' || ev.key === 'Tab') {
      ev.preventDefault();
      closeMenu();
    } else {
      const li = [...menu.querySelectorAll('[role=menuitem]')].find(
        (x) => x.querySelector('kbd')?.textContent.toLowerCase() === ev.key.toLowerCase(),
      );
      if (li) {
        ev.preventDefault();
        li.click();
      }
    }
  });
  document.addEventListener('mousedown', (ev) => {
    if (!menu.hidden && !menu.contains(ev.target)) closeMenu({ restoreFocus: false });
  });
  window.addEventListener('blur', () => closeMenu({ restoreFocus: false }));
  window.addEventListener('resize', () => {
    closeMenu({ restoreFocus: false });
    placeToasts();
  });
}

async function runAction(action, id) {
  const t = state.threads.get(id);
  if (!t) return;
  const api = state.client;
  const path = `/threads/${encodeURIComponent(id)}`;
  try {
    switch (action) {
      case 'read':
        upsertThread(await api.api('POST', `${path}/read`));
        break;
      case 'unread':
        upsertThread(await api.api('POST', `${path}/unread`));
        break;
      case 'assign':
        openAssign(t);
        break;
      case 'link':
        await linkImages(t);
        break;
      case 'images':
        openImages(id);
        break;
      case 'open':
        select(id, { focus: false });
        $('reply-body')?.focus();
        break;
      default:
        break;
    }
  } catch (e) {
    toast({ title: 'That did not work', text: failure(e), kind: 'error' });
  }
}

async function linkImages(t) {
  if (!t.folder_id) {
    toast({ title: 'No folder', text: 'Assign a folder to this thread before linking its images.', kind: 'error' });
    return;
  }
  const { messages } = await state.client.api('GET', `/threads/${encodeURIComponent(t.id)}/messages?limit=200`);
  const withImages = messages.filter((m) => imageAttachments(m).length);
  if (!withImages.length) {
    toast({ title: 'No images', text: 'This conversation has no image attachments.' });
    return;
  }
  let linked = 0;
  for (const m of withImages) {
    const r = await state.client.api('POST', `/messages/${encodeURIComponent(m.id)}/link-images`);
    linked += r.linked;
  }
  const name = await folderName(t.folder_id);
  toast({
    title: 'Link Image(s) to Folder',
    text: linked ? `${linked} image(s) added to ${name}'s photos.` : `The images were already in ${name}'s photos.`,
  });
}

function openImages(threadId) {
  const t = state.threads.get(threadId);
  const images = imageAttachments(t?.last_message);
  if (!images.length) {
    toast({ title: 'No images', text: 'The last message of this thread has no images.' });
    return;
  }
  const blocked = [];
  for (const a of images) {
    // One window per image; a window the browser blocked is offered as a link instead.
    const w = window.open(a.url, '_blank');
    if (!w) blocked.push(a);
    else {
      try {
        w.opener = null;
      } catch {
        /* cross-origin already */
      }
    }
  }
  if (blocked.length) showImageLinks(blocked);
}

function showImageLinks(images) {
  const viewer = $('image-viewer');
  $('image-viewer-list').replaceChildren(
    ...images.map((a, i) => h('li', {}, h('a', { href: a.url, target: '_blank', rel: 'noopener' }, `Image ${i + 1}`))),
  );
  viewer.hidden = false;
}

// ---------------------------------------------------------------------------------------
// Assign Folder

let assignFor = null;
let assignPick = null;

function openAssign(t) {
  assignFor = t;
  assignPick = null;
  const dlg = $('assign-dialog');
  $('assign-for').textContent = `Customer ${formatPhone(t.customer_number)} — currently ${t.folder_id ? folderLabel(t.folder_id) : 'unassigned'}.`;
  $('folder-search').value = formatPhone(t.customer_number);
  $('folder-results').replaceChildren();
  $('assign-confirm').disabled = true;
  dlg.showModal();
  $('folder-search').focus();
  searchFolders();
}

async function searchFolders() {
  const text = $('folder-search').value.trim();
  const p = new URLSearchParams();
  const digits = text.replace(/\D/g, '');
  if (text && /^[+\d\s().-]+$/.test(text) && digits.length >= 3) p.set('phone', text);
  else if (text) p.set('q', text);
  $('assign-status').textContent = 'Searching…';
  try {
    const folders = await state.client.api('GET', `/folders?${p}`);
    for (const f of folders) state.folders.set(f.id, f);
    assignPick = null;
    $('assign-confirm').disabled = true;
    $('folder-results').replaceChildren(
      ...folders.map((f) =>
        h(
          'li',
          { role: 'option', 'aria-selected': 'false', 'data-folder-id': f.id, tabindex: '-1' },
          h('strong', {}, f.name),
          h('span', { class: 'meta' }, ` · ${f.location_id} · ${f.phone_numbers.map(formatPhone).join(', ')}`),
        ),
      ),
    );
    $('assign-status').textContent = folders.length
      ? `${folders.length} folder(s) found. Pick one and press the green check (or double-click it).`
      : 'No folder matches. Search by name, or create the folder first.';
  } catch (e) {
    $('assign-status').textContent = `Search failed: ${e.detail || e.message}`;
  }
}

function pickFolder(li) {
  for (const x of $('folder-results').children) x.setAttribute('aria-selected', String(x === li));
  assignPick = li?.dataset.folderId ?? null;
  $('assign-confirm').disabled = !assignPick;
  li?.focus();
}

async function confirmAssign() {
  if (!assignFor || !assignPick) return;
  const t = assignFor;
  try {
    const updated = await state.client.api('POST', `/threads/${encodeURIComponent(t.id)}/assign`, { folder_id: assignPick });
    $('assign-dialog').close();
    upsertThread(updated);
    toast({ title: 'Folder assigned', text: `${formatPhone(t.customer_number)} → ${await folderName(assignPick)}` });
    select(t.id, { show: state.detail?.id === t.id });
  } catch (e) {
    $('assign-status').textContent = `Could not assign: ${e.detail || e.message}`;
  }
}

function wireAssign() {
  const dlg = $('assign-dialog');
  $('assign-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    searchFolders();
  });
  const results = $('folder-results');
  results.addEventListener('click', (ev) => pickFolder(ev.target.closest('[role=option]')));
  results.addEventListener('dblclick', (ev) => {
    const li = ev.target.closest('[role=option]');
    if (!li) return;
    pickFolder(li);
    confirmAssign();
  });
  results.addEventListener('keydown', (ev) => {
    const items = [...results.children];
    const i = items.findIndex((x) => x.getAttribute('aria-selected') === 'true');
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      ev.preventDefault();
      pickFolder(items[Math.max(0, Math.min(items.length - 1, i + (ev.key === 'ArrowDown' ? 1 : -1)))]);
    } else if (ev.key === 'Enter' && assignPick) {
      ev.preventDefault();
      confirmAssign();
    }
  });
  $('assign-confirm').addEventListener('click', confirmAssign);
  const cancel = () => dlg.close();
  $('assign-cancel').addEventListener('click', cancel);
  $('assign-cancel-x').addEventListener('click', cancel);
  dlg.addEventListener('close', () => {
    if (assignFor) select(assignFor.id, { show: false });
    assignFor = null;
  });
}

// ---------------------------------------------------------------------------------------
// Thread view and folder Communications view

async function showThread(id, { keepFocus } = {}) {
  const t = state.threads.get(id);
  if (!t) return;
  state.detail = { kind: 'thread', id };
  state.presence?.open(id);
  $('split').classList.add('has-detail');
  const pane = $('detail');
  pane.replaceChildren(
    h('header', { class: 'detail-header', id: 'thread-header' }),
    h('ol', { class: 'conversation', id: 'conversation', 'aria-label': 'Conversation', 'aria-live': 'polite' }, h('li', { class: 'empty' }, 'Loading…')),
    h('p', { class: 'typing-indicator', id: 'typing-indicator', 'aria-live': 'polite' }),
    replyForm(t),
  );
  renderThreadHeader(t);
  placeToasts();
  await loadConversation(id);
  if (!keepFocus) $('reply-body')?.focus();
}

/** (Re)loads the open conversation's messages; the header and the reply box stay. */
async function loadConversation(id) {
  try {
    const { messages } = await state.client.api('GET', `/threads/${encodeURIComponent(id)}/messages?limit=100`);
    if (state.detail?.id !== id || !$('conversation')) return;
    $('conversation').replaceChildren(...messages.map(renderMessage));
    scrollConversation();
  } catch (e) {
    if (state.detail?.id !== id || !$('conversation')) return;
    $('conversation').replaceChildren(h('li', { class: 'error' }, `Could not load the conversation: ${failure(e)}`));
  }
}

/** Reloads what the detail pane shows. */
async function refreshDetail() {
  const d = state.detail;
  if (d?.kind === 'thread') {
    const t = state.threads.get(d.id);
    if (t && $('thread-header')) {
      renderThreadHeader(t);
      await loadConversation(d.id);
    } else if (t) await showThread(d.id, { keepFocus: true });
  } else if (d?.kind === 'folder') await showFolder(d.id, d.tab);
}

/** Back to the list alone (on a phone the detail pane takes the whole screen). */
function closeDetail() {
  const id = state.detail?.kind === 'thread' ? state.detail.id : state.selectedId;
  state.detail = null;
  state.presence?.open(null);
  $('split').classList.remove('has-detail');
  $('detail').replaceChildren(h('p', { class: 'empty' }, 'Select a message to see the conversation.'));
  placeToasts();
  if (id && state.threads.has(id)) select(id, { show: false });
}

function backButton() {
  return h('button', { type: 'button', class: 'back', id: 'detail-back', onclick: closeDetail }, '← Messages');
}

function renderThreadHeader(t) {
  const header = $('thread-header');
  if (!header) return;
  header.replaceChildren(
    backButton(),
    h('h2', {}, formatPhone(t.customer_number)),
    h(
      'p',
      { class: 'meta' },
      `Location ${t.location_id} · Folder: `,
      t.folder_id
        ? h('a', { href: '#', class: 'folder-link', 'data-folder-id': t.folder_id, onclick: (ev) => { ev.preventDefault(); showFolder(t.folder_id); } }, folderLabel(t.folder_id))
        : h('span', { class: 'unassigned' }, 'unassigned'),
      ` · ${t.unread ? `${t.unread_count} unread` : 'read'}`,
    ),
    h(
      'div',
      { class: 'detail-actions' },
      h('button', { type: 'button', onclick: () => runAction(t.unread ? 'read' : 'unread', t.id) }, t.unread ? 'Mark as read' : 'Mark as unread'),
      h('button', { type: 'button', onclick: () => runAction('assign', t.id) }, 'Assign Folder…'),
    ),
    h('div', { class: 'thread-presence', id: 'thread-presence', hidden: true }),
  );
  renderConversationPresence(t.id);
}

function renderMessage(m) {
  const imgs = m.attachments || [];
  return h(
    'li',
    { class: `bubble ${m.direction}`, 'data-message-id': m.id },
    m.body ? h('p', { class: 'body' }, m.body) : '',
    imgs.length
      ? h(
          'p',
          { class: 'attachments' },
          ...imgs.map((a, i) =>
            a.content_type.startsWith('image/')
              ? h('a', { href: a.url, target: '_blank', rel: 'noopener', class: 'thumb' }, h('img', { src: a.url, alt: `Photo ${i + 1}`, loading: 'lazy' }))
              : h('a', { href: a.url, target: '_blank', rel: 'noopener' }, `Attachment ${i + 1} (${a.content_type})`),
          ),
        )
      : '',
    h(
      'p',
      { class: 'meta' },
      m.direction === 'outbound' ? `Reply${m.author_id ? ` by ${nameOf(m.author_id)}` : ''} · ` : 'Customer · ',
      h('time', { datetime: m.created_at }, formatTime(m.created_at, true)),
    ),
  );
}

function appendToDetail(m) {
  if (!m || state.detail?.kind !== 'thread' || state.detail.id !== m.thread_id) return;
  const list = $('conversation');
  if (!list || list.querySelector(`[data-message-id="${CSS.escape(m.id)}"]`)) return;
  list.querySelector('.empty')?.remove();
  list.append(renderMessage(m));
  scrollConversation();
}

function scrollConversation() {
  const list = $('conversation');
  if (list) list.scrollTop = list.scrollHeight;
}

/** The newest message the open conversation shows (what a reply answers), or null. */
function newestShown() {
  const bubbles = $('conversation')?.querySelectorAll('li.bubble[data-message-id]');
  return bubbles?.length ? bubbles[bubbles.length - 1].dataset.messageId : null;
}

function replyForm(t) {
  const status = h('span', { class: 'status', role: 'status' });
  const body = h('textarea', { id: 'reply-body', rows: '3', maxlength: '1600', placeholder: 'Type a reply to the customer…', 'aria-label': 'Reply' });
  body.value = state.drafts.get(t.id) || '';
  const warning = h('div', { class: 'reply-warning', id: 'reply-warning', role: 'alert', hidden: true });
  body.addEventListener('input', () => {
    if (body.value) state.drafts.set(t.id, body.value);
    else state.drafts.delete(t.id);
    state.presence?.typed();
  });
  const form = h(
    'form',
    { class: 'reply', id: 'reply-form' },
    warning,
    body,
    h('div', { class: 'reply-actions' }, status, h('button', { type: 'submit', class: 'primary', id: 'send-reply' }, 'Send reply')),
  );
  /**
   * Sends the reply, answering the newest message on screen: when the thread moved on
   * meanwhile (the customer wrote again, a colleague answered) the hub refuses with 409 and
   * the newer messages, which are shown with a warning; "Send anyway" sends with `force`.
   */
  const send = async (force) => {
    const text = body.value.trim();
    if (!text) return;
    status.textContent = 'Sending…';
    const after = newestShown();
    try {
      const m = await state.client.api('POST', `/threads/${encodeURIComponent(t.id)}/replies`, {
        body: text,
        ...(after && !force ? { after_message_id: after } : {}),
        ...(force ? { force: true } : {}),
      });
      body.value = '';
      state.drafts.delete(t.id);
      warning.hidden = true;
      warning.replaceChildren();
      status.textContent = 'Sent.';
      state.presence?.sentReply();
      appendToDetail(m);
    } catch (e) {
      if (e instanceof ApiError && e.status === 409 && /\/thread-changed$/.test(e.problem.type || '')) {
        showNewer(t, e.problem.newer || [], warning, () => send(true));
        status.textContent = 'Not sent: the conversation changed.';
      } else status.textContent = `Not sent: ${failure(e)}`;
    }
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    send(false);
  });
  body.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) form.requestSubmit();
    if (ev.key === 'Escape') select(t.id, { show: false });
  });
  return form;
}

/** The 409 of the reply guard: the newer messages join the conversation, marked, and the
 * warning above the reply box says what happened and offers "Send anyway". */
function showNewer(t, newer, warning, sendAnyway) {
  for (const m of newer) appendToDetail(m);
  for (const m of newer) $('conversation')?.querySelector(`[data-message-id="${CSS.escape(m.id)}"]`)?.classList.add('newer');
  const customer = newer.filter((m) => m.direction === 'inbound').length;
  const replies = newer.filter((m) => m.direction === 'outbound');
  const parts = [];
  if (customer) parts.push(`the customer wrote ${customer === 1 ? 'again' : `${customer} more messages`}`);
  if (replies.length) {
    const who = [...new Set(replies.map((m) => (m.author_id ? nameOf(m.author_id) : 'someone')))].join(' and ');
    parts.push(`${who} replied`);
  }
  const what = parts.length ? parts.join(', and ') : 'new messages arrived';
  const anyway = h('button', { type: 'button', class: 'send-anyway', id: 'send-anyway' }, 'Send anyway');
  anyway.addEventListener('click', () => {
    anyway.disabled = true;
    sendAnyway();
  });
  warning.replaceChildren(
    h('p', {}, h('strong', {}, 'Not sent: '), `while you were writing, ${what} (marked above). Read it, then send anyway or change your reply.`),
    h('div', { class: 'warning-actions' }, anyway),
  );
  warning.hidden = false;
  placeToasts();
}

async function showFolder(id, tab = 'communications') {
  state.detail = { kind: 'folder', id, tab };
  state.presence?.open(null);
  $('split').classList.add('has-detail');
  const pane = $('detail');
  if (!pane.querySelector(`[data-folder-id="${CSS.escape(id)}"]`)) pane.replaceChildren(h('p', { class: 'empty' }, 'Loading the folder…'));
  try {
    const enc = encodeURIComponent(id);
    const [folder, msgs, photos] = await Promise.all([
      state.client.api('GET', `/folders/${enc}`),
      state.client.api('GET', `/folders/${enc}/messages?limit=200`),
      state.client.api('GET', `/folders/${enc}/photos`),
    ]);
    if (state.detail?.id !== id) return;
    state.folders.set(id, folder);
    const tabBtn = (name, label) =>
      h('button', { type: 'button', role: 'tab', class: 'tab', 'aria-selected': String(tab === name), onclick: () => showFolder(id, name) }, label);
    const body =
      tab === 'communications'
        ? h(
            'ol',
            { class: 'conversation', id: 'folder-communications', 'aria-label': 'Communications' },
            ...(msgs.messages.length
              ? msgs.messages.map((m) => {
                  const li = renderMessage(m);
                  const t = state.threads.get(m.thread_id);
                  if (t) li.querySelector('.meta').prepend(`${formatPhone(t.customer_number)} · `);
                  return li;
                })
              : [h('li', { class: 'empty' }, 'No communications yet.')]),
          )
        : h(
            'ul',
            { class: 'photos', id: 'folder-photos', 'aria-label': 'Photos' },
            ...(photos.length
              ? photos.map((p) => h('li', {}, h('a', { href: p.url, target: '_blank', rel: 'noopener' }, h('img', { src: p.url, alt: `Photo linked by ${nameOf(p.linked_by)}`, loading: 'lazy' }))))
              : [h('li', { class: 'empty' }, 'No photos linked yet.')]),
          );
    pane.replaceChildren(
      h(
        'header',
        { class: 'detail-header', 'data-folder-id': id },
        backButton(),
        h('h2', {}, `Folder: ${folder.name}`),
        h(
          'p',
          { class: 'meta' },
          `${folder.id} · Location ${folder.location_id} · ${folder.phone_numbers.map(formatPhone).join(', ') || 'no numbers'}`,
        ),
        h(
          'p',
          { class: 'meta' },
          `Sales: ${folder.sales_resource_id ? nameOf(folder.sales_resource_id) : '—'} · Service: ${folder.service_resource_id ? nameOf(folder.service_resource_id) : '—'}`,
        ),
      ),
      h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Folder' }, tabBtn('communications', 'Communications'), tabBtn('photos', `Photos (${photos.length})`)),
      body,
    );
  } catch (e) {
    if (state.detail?.id !== id) return;
    pane.replaceChildren(
      h('header', { class: 'detail-header' }, backButton()),
      h('p', { class: 'error' }, `Could not open the folder: ${failure(e)}`),
    );
  }
}

// ---------------------------------------------------------------------------------------
// Subscribe to all, resources

function setSubscribe(on) {
  const b = $('subscribe-all');
  b.setAttribute('aria-checked', String(!!on));
  b.querySelector('.state').textContent = on ? 'On' : 'Off';
}

function wireToolbar() {
  $('subscribe-all').addEventListener('click', async () => {
    const b = $('subscribe-all');
    const want = b.getAttribute('aria-checked') !== 'true';
    b.disabled = true;
    try {
      const me = await state.client.api('PUT', '/me/subscriptions', { subscribe_all: want });
      state.me = me;
      setSubscribe(me.subscribe_all);
      setUnread(me.unread_count);
      if (!state.view.resourceId) await loadThreads();
    } catch (e) {
      toast({ title: 'Could not change the subscription', text: failure(e), kind: 'error' });
    } finally {
      b.disabled = false;
    }
  });
  $('resource-select').addEventListener('change', async (ev) => {
    state.view.resourceId = ev.target.value;
    state.client.follow(state.view.resourceId || null);
    state.selectedId = null;
    await loadThreads();
  });
  $('unread-only').addEventListener('change', async (ev) => {
    state.view.unreadOnly = ev.target.checked;
    await loadThreads();
  });
  $('close-center').addEventListener('click', () => setCenterOpen(false));
  $('open-center').addEventListener('click', () => setCenterOpen(true));
  $('new-messages').addEventListener('click', () => setCenterOpen(true));
  if ('Notification' in window && Notification.permission === 'default') {
    const b = $('enable-notifications');
    b.hidden = false;
    b.addEventListener('click', async () => {
      await Notification.requestPermission();
      b.hidden = true;
    });
  }
  $('image-viewer-close').addEventListener('click', () => ($('image-viewer').hidden = true));
  $('retry-now').addEventListener('click', () => state.client?.reconnectNow());
  const sound = $('sound-toggle');
  sound.checked = state.sound;
  sound.addEventListener('change', () => {
    setSound(sound.checked);
    channel?.postMessage({ type: 'sound', on: sound.checked });
    if (sound.checked) beep(); // a sample, and the browser lets a page play after a click
  });
  channel?.addEventListener('message', (ev) => {
    const m = ev.data || {};
    if (m.type === 'sound') setSound(!!m.on);
    if (m.type === 'opened' && m.user === state.me?.user_id) dropPopUps(m.threadId);
  });
  // Another tab changed the setting while this one was closed or asleep.
  window.addEventListener('storage', (ev) => {
    if (ev.key === SOUND_KEY) setSound(ev.newValue === 'on');
  });
}

function setSound(on) {
  state.sound = on;
  localStorage.setItem(SOUND_KEY, on ? 'on' : 'off');
  $('sound-toggle').checked = on;
}

async function loadResources() {
  try {
    const resources = await state.client.api('GET', '/resources');
    const sel = $('resource-select');
    const current = sel.value;
    sel.replaceChildren(
      h('option', { value: '' }, 'My messages'),
      ...resources
        .map((r) => (state.names.set(r.user_id, r.name || r.user_id), r))
        .sort((a, b) => (a.name || a.user_id).localeCompare(b.name || b.user_id))
        .map((r) => h('option', { value: r.user_id }, `Resource: ${r.name || r.user_id}`)),
    );
    sel.value = current;
  } catch {
    /* the drop-down keeps "My messages" */
  }
}

function setCenterOpen(open) {
  $('message-center').hidden = !open;
  $('center-closed').hidden = open;
  // A conversation behind the closed window is not being viewed.
  state.presence?.open(open && state.detail?.kind === 'thread' ? state.detail.id : null);
  if (open) {
    const row = $('thread-rows').querySelector('tr[tabindex="0"]');
    (row || $('message-center')).focus?.();
  }
}

// ---------------------------------------------------------------------------------------
// The red indicator, the title, pop-ups

function setUnread(count) {
  state.unread = count;
  const b = $('new-messages');
  b.dataset.count = String(count);
  $('new-messages-count').textContent = count > 99 ? '99+' : String(count);
  b.classList.toggle('has-new', count > 0);
  b.setAttribute('aria-label', `New messages: ${count}. Open the Message Center`);
  document.title = count > 0 ? `(${count}) ${TITLE}` : TITLE;
  setFavicon(count);
}

/** The tab's icon carries a red dot while there are new messages. */
function setFavicon(count) {
  const icon = count > 0 ? 'favicon-unread.svg' : 'favicon.svg';
  const link = $('favicon');
  if (link.getAttribute('href') !== icon) link.setAttribute('href', icon);
}

/**
 * One alert per message per browser: every tab of this user gets the message on its own
 * connection; the first to take the message's Web Lock gives the alert (a visible tab goes
 * first) and keeps the lock a while, so the others stay quiet. Nobody is alerted for a
 * thread viewed in another resource's list unless the thread is also in their own list, or
 * for the conversation open on screen.
 */
async function alertFor(thread, message) {
  try {
    if (!(await isMine(thread.id))) return;
    if (!(await claimAlert(message.id))) return;
    const watching =
      document.visibilityState === 'visible' && !$('message-center').hidden &&
      state.detail?.kind === 'thread' && state.detail.id === thread.id;
    if (watching) return;
    state.alerts += 1;
    if (state.sound && beep()) state.sounds += 1;
    popUp(thread, message);
  } finally {
    state.decided += 1;
  }
}

/** Whether a thread is in this user's own list (their audience), not only in a followed one. */
async function isMine(threadId) {
  if (!state.client?.followed) return true; // then the hub sends only the audience's events
  try {
    const page = await state.client.api('GET', '/threads?view=mine&limit=20');
    return page.threads.some((t) => t.id === threadId);
  } catch {
    return false;
  }
}

async function claimAlert(messageId) {
  if (!navigator.locks) return true;
  if (document.visibilityState !== 'visible') await new Promise((r) => setTimeout(r, HIDDEN_TAB_DEFER_MS));
  const name = `switchboard.alert/${state.me?.tenant}/${state.me?.user_id}/${messageId}`;
  return new Promise((resolve) => {
    navigator.locks
      .request(name, { ifAvailable: true }, (lock) => {
        resolve(!!lock);
        return lock ? new Promise((r) => setTimeout(r, ALERT_HOLD_MS)) : undefined;
      })
      .catch(() => resolve(true));
  });
}

let audio = null;

/** A short two-tone chime (Web Audio: nothing to download); false when it cannot play. */
function beep() {
  try {
    audio ||= new AudioContext();
    audio.resume?.();
    const t0 = audio.currentTime;
    for (const [i, f] of [880, 1320].entries()) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = f;
      gain.gain.setValueAtTime(0.0001, t0 + i * 0.12);
      gain.gain.exponentialRampToValueAtTime(0.15, t0 + i * 0.12 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t0 + i * 0.12 + 0.18);
      osc.connect(gain).connect(audio.destination);
      osc.start(t0 + i * 0.12);
      osc.stop(t0 + i * 0.12 + 0.2);
    }
    return true;
  } catch {
    return false; // no sound on this browser
  }
}

function popUp(thread, message) {
  const who = formatPhone(thread.customer_number);
  const summary = messageSummary(message).map((s) => s.text).join(' ');
  const el = toast({
    title: 'Customer Message',
    text: summary,
    sub: `${who} · ${thread.folder_id ? folderLabel(thread.folder_id) : 'unassigned'}`,
    subLater: thread.folder_id ? folderName(thread.folder_id).then((name) => `${who} · ${name}`) : null,
    kind: 'customer',
    onOpen: () => {
      setCenterOpen(true);
      if (!state.threads.has(thread.id)) state.threads.set(thread.id, thread);
      renderList();
      select(thread.id);
    },
  });
  el.dataset.threadId = thread.id;
  if ('Notification' in window && Notification.permission === 'granted' && document.hidden) {
    try {
      const n = new Notification('Customer Message', { body: `${who}: ${summary}`, tag: thread.id });
      n.onclick = () => {
        window.focus();
        select(thread.id);
      };
    } catch {
      /* notifications are optional */
    }
  }
}

function toast({ title, text, sub, subLater, kind = 'info', onOpen }) {
  const box = $('toasts');
  const close = h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Dismiss' }, '×');
  const el = h(
    'div',
    { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('div', { class: 'toast-title' }, h('strong', {}, title), close),
    sub ? h('div', { class: 'toast-sub' }, sub) : '',
    h('div', { class: 'toast-text' }, text || ''),
    onOpen ? h('button', { type: 'button', class: 'link-button open' }, 'Open') : '',
  );
  subLater?.then((v) => {
    const el2 = el.querySelector('.toast-sub');
    if (el2) el2.textContent = v;
  });
  const ms = TOAST_MS[kind] ?? TOAST_MS.info;
  let timer = setTimeout(() => el.remove(), ms);
  el.addEventListener('mouseenter', () => clearTimeout(timer));
  el.addEventListener('mouseleave', () => (timer = setTimeout(() => el.remove(), ms / 2)));
  close.addEventListener('click', () => el.remove());
  el.querySelector('.open')?.addEventListener('click', () => {
    el.remove();
    onOpen();
  });
  placeToasts();
  box.append(el);
  while (box.children.length > MAX_TOASTS) box.firstElementChild.remove();
  return el;
}

/**
 * Pop-ups stack up from just above the status bar (bottom left); on a phone, from just above
 * the reply box when a conversation is open, so that they cover neither it nor the header.
 */
function placeToasts() {
  const bar = $('statusbar');
  const reply = $('reply-form');
  let edge = bar.checkVisibility() ? bar.getBoundingClientRect().top : innerHeight;
  if (matchMedia('(max-width: 700px)').matches && reply?.checkVisibility()) edge = reply.getBoundingClientRect().top;
  $('toasts').style.setProperty('--toast-bottom', `${Math.max(0, Math.round(innerHeight - edge + 8))}px`);
}

// ---------------------------------------------------------------------------------------

wireList();
wireMenu();
wireAssign();
wireToolbar();
start();
