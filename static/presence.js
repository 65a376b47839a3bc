// Presence in the Message Center: who else is viewing or typing in which thread (the hub's
// `presence` frames, and `GET /api/v1/presence` after every (re)connect), and what this tab
// says about itself: `viewing` while a conversation is open, `typing` while its reply box had
// keystrokes in the last TYPING_MS, `idle` when the tab is hidden or the conversation closes.
// A frame is sent only when that changes (the hub rate-limits frames).
import { h } from './ui.js';

/** How long after the last keystroke this tab still says `typing`. */
export const TYPING_MS = 4000;
const HUES = 8;

export class Presence {
  /**
   * @param {import('./switchboard-client.js').SwitchboardClient} client
   * @param {{selfId: string, onChange: (threadIds: Set<string>|null) => void}} opts
   *   `onChange` gets the threads whose picture changed (null: all of them).
   */
  constructor(client, { selfId, onChange }) {
    this.client = client;
    this.selfId = selfId;
    this.onChange = onChange;
    /** thread id -> [{user_id, name, state}], the user's own entry left out. */
    this.byThread = new Map();
    this.threadId = null; // the conversation open on screen
    this.typingUntil = 0;
    this.typingTimer = null;
    this.sent = null; // {thread_id, state} last told to this session's hub; null: nothing yet
    this.loading = null; // threads changed by frames while a GET was on its way
    this.offs = [
      client.on('presence', (data) => this.apply(data)),
      client.on('hello', () => {
        // A new session: the hub knows nothing of this tab yet, and the picture may be stale.
        this.sent = null;
        this.sync();
        this.load();
      }),
    ];
    this.onVisibility = () => this.sync();
    document.addEventListener('visibilitychange', this.onVisibility);
  }

  stop() {
    for (const off of this.offs) off();
    document.removeEventListener('visibilitychange', this.onVisibility);
    clearTimeout(this.typingTimer);
  }

  /** The others in a thread, as the hub orders them (by user id). */
  users(threadId) {
    return this.byThread.get(threadId) || [];
  }

  /** The current picture over HTTP; frames that came meanwhile are newer and win. */
  async load() {
    const changed = new Set();
    this.loading = changed;
    try {
      const threads = await this.client.api('GET', '/presence');
      if (this.loading !== changed) return; // a later load took over
      const keep = new Map([...changed].map((id) => [id, this.byThread.get(id)]));
      this.byThread.clear();
      for (const t of threads) this.set(t.thread_id, t.users);
      for (const [id, users] of keep) this.set(id, users || []);
      this.onChange(null);
    } catch {
      /* the live frames still come; the next reconnect loads again */
    } finally {
      if (this.loading === changed) this.loading = null;
    }
  }

  apply(data) {
    if (!data?.thread_id) return;
    this.set(data.thread_id, data.users || []);
    this.loading?.add(data.thread_id);
    this.onChange(new Set([data.thread_id]));
  }

  set(threadId, users) {
    const others = users.filter((u) => u.user_id !== this.selfId);
    if (others.length) this.byThread.set(threadId, others);
    else this.byThread.delete(threadId);
  }

  // -------------------------------------------------------------------------------------
  // What this tab says

  /** The conversation open on screen (null: none). */
  open(threadId) {
    if (threadId !== this.threadId) this.typingUntil = 0;
    this.threadId = threadId;
    this.sync();
  }

  /** A keystroke in the reply box of the open conversation. */
  typed() {
    this.typingUntil = Date.now() + TYPING_MS;
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this.sync(), TYPING_MS + 20);
    this.sync();
  }

  /** The reply went out: no longer typing. */
  sentReply() {
    this.typingUntil = 0;
    this.sync();
  }

  wanted() {
    if (!this.threadId || document.visibilityState === 'hidden') return { thread_id: this.sent?.thread_id ?? null, state: 'idle' };
    return { thread_id: this.threadId, state: Date.now() < this.typingUntil ? 'typing' : 'viewing' };
  }

  /** Sends a frame when what this tab says changed; nothing while it is idle and was idle. */
  sync() {
    const want = this.wanted();
    const was = this.sent;
    if (want.state === 'idle') {
      if (!was || was.state === 'idle') return;
    } else if (was && was.thread_id === want.thread_id && was.state === want.state) return;
    if (this.client.send({ type: 'presence', thread_id: want.thread_id, state: want.state })) this.sent = want;
  }
}

// ---------------------------------------------------------------------------------------
// Drawing

/** "Olivia Service" → "OS", "dana" → "DA". */
export function initials(name) {
  const words = String(name || '?').trim().split(/\s+/).filter(Boolean);
  if (words.length >= 2) return (words[0][0] + words[words.length - 1][0]).toUpperCase();
  return (words[0] || '?').slice(0, 2).toUpperCase();
}

export function displayName(u) {
  return u.name || u.user_id;
}

function hue(userId) {
  let x = 0;
  for (const c of String(userId)) x = (x * 31 + c.codePointAt(0)) >>> 0;
  return x % HUES;
}

/** The avatars of the others in a thread: a circle with initials each, typing ones marked. */
export function avatars(users, { size = 'small' } = {}) {
  if (!users.length) return null;
  const label = users.map((u) => `${displayName(u)} ${u.state === 'typing' ? 'typing' : 'viewing'}`).join(', ');
  return h(
    'span',
    { class: `presence ${size}`, role: 'img', 'aria-label': label, title: label },
    ...users.map((u) =>
      h(
        'span',
        { class: `avatar hue-${hue(u.user_id)}`, 'data-user-id': u.user_id, 'data-state': u.state, 'aria-hidden': 'true' },
        initials(displayName(u)),
      ),
    ),
  );
}

/** "Dana is typing…", "Dana and Sam are typing…", "Dana, Sam and 2 others are typing…"; '' for nobody. */
export function typingText(users) {
  const names = users.filter((u) => u.state === 'typing').map(displayName);
  if (!names.length) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return `${names[0]}, ${names[1]} and ${names.length - 2} other${names.length > 3 ? 's' : ''} are typing…`;
}
