/**
 * switchboard-client.js — a reusable browser client for the Switchboard hub (protocol v1).
 *
 * A plain ES module with no dependencies; import it from any page served with the hub (or
 * from an origin listed in `server.allowed_origins`):
 *
 *   import { SwitchboardClient } from '/switchboard-client.js';
 *
 *   const client = new SwitchboardClient({
 *     token: jwt,                          // user/admin JWT (string, or a function returning one)
 *     baseUrl: location.origin,            // hub origin; '/api/v1' and '/ws' are appended
 *     onResync: async () => reloadAll(),   // the hub can no longer replay: reload over REST
 *   });
 *   client.on('message.new', (data, frame) => popUp(data.thread, data.message));
 *   client.on('unread.count', ({ count }) => badge(count));
 *   client.on('state', (state) => showConnectionState(state));
 *   client.connect();
 *   const threads = await client.api('GET', '/threads?view=mine');
 *
 * Connection
 * - `connect()` opens `GET /ws?access_token=…`. The first frame is `hello`; the client keeps
 *   the newest event id it has seen (`lastEventId`).
 * - When the socket drops for any reason other than `close()` or an expired/revoked token
 *   (close code 4001), it reconnects by itself with exponential backoff and jitter
 *   (`backoff.initialMs`, doubling up to `backoff.maxMs`, 5 s, while the page is visible, or
 *   `backoff.hiddenMaxMs`, 30 s, while it is hidden; each wait ±`backoff.jitter`; reset after
 *   a successful `hello`). `retryAt` is when the next attempt starts (for a countdown). A
 *   browser `online` event, the page becoming visible again, or `reconnectNow()` (a "Retry
 *   now" button) skips the wait.
 * - It resumes **in the handshake**: `GET /ws?access_token=…&last_event_id=ID`, so the hub
 *   replays every missed event, in order, before any live event; then emits `resumed`
 *   (`{replayed}`). If the hub answers `resync` (its log no longer reaches back), the
 *   client calls `onResync()` and emits `resync`: the app should reload its state over REST.
 * - A keep-alive `ping` frame is sent every `pingIntervalMs`; an unanswered one (after
 *   `pongTimeoutMs`) drops the socket and reconnects. `ping()` returns a promise resolved at
 *   the `pong`: the hub writes every event committed before the ping first (a barrier).
 * - `follow(resourceId|null)` asks for a resource's threads too (the drop-down); it is sent
 *   again after every reconnect. `refresh(token)` swaps in a fresher token.
 *
 * Events (`on(type, fn)` returns an unsubscribe function; `fn(data, frame)`):
 * - every hub event by its type: `message.new`, `message.sent`, `thread.read`,
 *   `thread.unread`, `thread.assigned`, `unread.count`, `images.linked`, … and `event` for all
 *   of them (`fn(frame)`), each delivered once (duplicates by id are dropped);
 * - `presence` (`{thread_id, users}`: who is in a thread now; not an event, never replayed:
 *   read `GET /presence` after each `hello`); send your own with
 *   `send({type: 'presence', thread_id, state})`;
 * - `hello` (the hello frame), `resumed` ({replayed}), `resync`, `error` (error frames),
 *   `close` ({code, reason}), `auth` (the token was refused: 401 or close 4001; no reconnect);
 * - `state` (`fn(state, detail)`): `idle` → `connecting` → `open` → (`reconnecting` →
 *   `connecting` → `open`)* → `closed` | `unauthorized`. `client.state` holds the current one;
 *   `detail` carries `{attempt, delayMs, retryAt}` while reconnecting.
 *
 * REST
 * - `api(method, path, body?)` calls `/api/v1` + path with the bearer token and JSON; it
 *   resolves to the parsed body, or rejects with an `ApiError` carrying the problem+json
 *   (`status`, `title`, `detail`, `problem`).
 */

/** An HTTP error from the hub, with its RFC 9457 problem document. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(`${status} ${problem?.title ?? ''}${problem?.detail ? `: ${problem.detail}` : ''}`);
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem ?? {};
    this.title = this.problem.title;
    this.detail = this.problem.detail;
  }
}

const DEFAULTS = {
  backoff: { initialMs: 500, maxMs: 5000, hiddenMaxMs: 30000, factor: 2, jitter: 0.3 },
  pingIntervalMs: 20000,
  pongTimeoutMs: 10000,
};

export class SwitchboardClient {
  /**
   * @param {object} opts
   * @param {string|(() => string)} opts.token  the JWT, or a function returning the current one
   * @param {string} [opts.baseUrl]  the hub's origin (default: the page's)
   * @param {() => (void|Promise<void>)} [opts.onResync]  reload everything over REST
   * @param {{initialMs?: number, maxMs?: number, hiddenMaxMs?: number, factor?: number, jitter?: number}} [opts.backoff]
   * @param {number} [opts.pingIntervalMs]  keep-alive ping period (0 disables)
   * @param {number} [opts.pongTimeoutMs]  how long a ping may go unanswered
   * @param {typeof WebSocket} [opts.WebSocket]  a WebSocket implementation (default: global)
   * @param {typeof fetch} [opts.fetch]  a fetch implementation (default: global)
   */
  constructor(opts) {
    this.opts = { ...DEFAULTS, ...opts, backoff: { ...DEFAULTS.backoff, ...(opts.backoff || {}) } };
    this.baseUrl = (opts.baseUrl || globalThis.location?.origin || '').replace(/\/$/, '');
    this.state = 'idle';
    /** The newest event id seen; sent as `last_event_id` when reconnecting. */
    this.lastEventId = null;
    /** The last `hello` frame. */
    this.hello = null;
    this.followed = null;
    this._handlers = new Map();
    this._ws = null;
    this._attempt = 0;
    this._timer = null;
    this._pingTimer = null;
    this._pending = [];
    this._seen = new Set();
    this._seenOrder = [];
    this._stopped = true;
    /** When the next reconnection attempt starts (ms since the epoch), while reconnecting. */
    this.retryAt = null;
    this._onOnline = () => this.reconnectNow();
    this._onVisible = () => {
      if (globalThis.document?.visibilityState === 'visible') this.reconnectNow();
    };
  }

  get token() {
    return typeof this.opts.token === 'function' ? this.opts.token() : this.opts.token;
  }

  /** Subscribe to an event type; returns a function that unsubscribes. */
  on(type, fn) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(fn);
    return () => this._handlers.get(type)?.delete(fn);
  }

  _emit(type, ...args) {
    for (const fn of [...(this._handlers.get(type) || [])]) {
      try {
        fn(...args);
      } catch (e) {
        console.error(`switchboard: a '${type}' handler failed`, e);
      }
    }
  }

  _setState(state, detail) {
    this.state = state;
    this._emit('state', state, detail || {});
  }

  /** Opens the websocket (and keeps it open until `close()`). */
  connect() {
    this._stopped = false;
    globalThis.addEventListener?.('online', this._onOnline);
    globalThis.document?.addEventListener?.('visibilitychange', this._onVisible);
    this._open();
  }

  /** Closes the websocket for good (no reconnect). */
  close() {
    this._stopped = true;
    globalThis.removeEventListener?.('online', this._onOnline);
    globalThis.document?.removeEventListener?.('visibilitychange', this._onVisible);
    clearTimeout(this._timer);
    this._stopPing();
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(1000, 'client closed');
    this._setState('closed');
  }

  /** Skips the backoff wait and reconnects at once (when not connected). */
  reconnectNow() {
    if (this._stopped || this.state === 'open' || this.state === 'connecting') return;
    clearTimeout(this._timer);
    this._open();
  }

  /** Drops the current socket as a network failure would (it reconnects and resumes). */
  drop() {
    if (this._ws) this._ws.close(4999, 'dropped by the client');
  }

  _wsUrl() {
    const u = new URL('/ws', this.baseUrl || globalThis.location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.searchParams.set('access_token', this.token);
    if (this.lastEventId != null) u.searchParams.set('last_event_id', this.lastEventId);
    return u.toString();
  }

  _open() {
    clearTimeout(this._timer);
    this.retryAt = null;
    this._setState('connecting', { attempt: this._attempt });
    const WS = this.opts.WebSocket || globalThis.WebSocket;
    let ws;
    try {
      ws = new WS(this._wsUrl());
    } catch (e) {
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    this._sessionSawEvent = false;
    this._resuming = this.lastEventId != null;
    ws.onmessage = (ev) => {
      if (ws !== this._ws) return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      this._onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      this._ws = null;
      this._stopPing();
      this._rejectPending(new Error('connection closed'));
      this._emit('close', { code: ev.code, reason: ev.reason });
      if (this._stopped) return;
      if (ev.code === 4001) {
        this._stopped = true;
        this._setState('unauthorized', { code: ev.code });
        this._emit('auth', { code: ev.code, reason: ev.reason });
        return;
      }
      if (!this._gotHello && ev.code === 1006 && this._attempt >= 2) {
        // A handshake refused outright may be a 401 (bad/expired token): check over HTTP.
        this.api('GET', '/me').then(
          () => this._scheduleReconnect(),
          (e) => {
            if (e.status === 401) {
              this._stopped = true;
              this._setState('unauthorized', { status: 401 });
              this._emit('auth', { status: 401 });
            } else this._scheduleReconnect();
          },
        );
        return;
      }
      this._scheduleReconnect();
    };
    ws.onerror = () => {};
    this._gotHello = false;
  }

  _scheduleReconnect() {
    if (this._stopped) return;
    const b = this.opts.backoff;
    const hidden = globalThis.document?.visibilityState === 'hidden';
    const cap = hidden ? Math.max(b.maxMs, b.hiddenMaxMs ?? b.maxMs) : b.maxMs;
    const base = Math.min(cap, b.initialMs * Math.pow(b.factor, this._attempt));
    const delayMs = Math.round(base * (1 - b.jitter + Math.random() * 2 * b.jitter));
    this._attempt += 1;
    this.retryAt = Date.now() + delayMs;
    this._setState('reconnecting', { attempt: this._attempt, delayMs, retryAt: this.retryAt });
    this._timer = setTimeout(() => this._open(), delayMs);
  }

  _onFrame(frame) {
    switch (frame.type) {
      case 'hello':
        this._gotHello = true;
        this._attempt = 0;
        this.hello = frame;
        if (this.lastEventId == null) this.lastEventId = frame.last_event_id;
        this._setState('open');
        this._emit('hello', frame);
        if (this.followed != null) this.send({ type: 'follow', resource_id: this.followed });
        this._startPing();
        return;
      case 'pong': {
        clearTimeout(this._pongTimer);
        const p = this._pending.shift();
        if (p) p.resolve();
        return;
      }
      case 'resumed':
        this._resuming = false;
        this._emit('resumed', { replayed: frame.replayed });
        return;
      case 'resync':
        this._resuming = false;
        // Nothing was replayed: every event of this session is newer than hello's head.
        if (!this._sessionSawEvent && this.hello) this.lastEventId = this.hello.last_event_id;
        Promise.resolve(this.opts.onResync?.()).catch((e) => console.error('switchboard: resync failed', e));
        this._emit('resync', frame);
        return;
      case 'error':
        this._emit('error', frame);
        return;
      default:
        if (frame.id == null) {
          this._emit(frame.type, frame.data, frame);
          return;
        }
        if (this._seen.has(frame.id)) return;
        this._remember(frame.id);
        this._sessionSawEvent = true;
        this.lastEventId = frame.id;
        this._emit(frame.type, frame.data, frame);
        this._emit('event', frame);
    }
  }

  _remember(id) {
    this._seen.add(id);
    this._seenOrder.push(id);
    if (this._seenOrder.length > 2000) this._seen.delete(this._seenOrder.shift());
  }

  /** Sends a client frame; returns false when not connected. */
  send(frame) {
    if (!this._ws || this._ws.readyState !== 1) return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Sends `ping`; resolves at the `pong`, after every event committed before the hub read
   * the ping has been delivered. Rejects when not connected or when the socket drops.
   */
  ping() {
    return new Promise((resolve, reject) => {
      if (!this.send({ type: 'ping' })) return reject(new Error('not connected'));
      this._pending.push({ resolve, reject });
    });
  }

  _rejectPending(err) {
    const pending = this._pending;
    this._pending = [];
    for (const p of pending) p.reject(err);
  }

  _startPing() {
    this._stopPing();
    if (!this.opts.pingIntervalMs) return;
    this._pingTimer = setInterval(() => {
      const ws = this._ws;
      this.ping().catch(() => {});
      clearTimeout(this._pongTimer);
      this._pongTimer = setTimeout(() => {
        if (ws === this._ws) ws?.close(4000, 'pong timeout');
      }, this.opts.pongTimeoutMs);
    }, this.opts.pingIntervalMs);
  }

  _stopPing() {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
  }

  /** Also receive the events of a resource's threads (`null` stops); kept across reconnects. */
  follow(resourceId) {
    this.followed = resourceId ?? null;
    this.send({ type: 'follow', resource_id: this.followed });
  }

  /** Swaps in a fresher token (same user) for this session and the next connections. */
  refresh(token) {
    this.opts.token = token;
    this.send({ type: 'refresh', token });
  }

  /** Calls the REST API: `api('POST', '/threads/T1/read')`. */
  async api(method, path, body) {
    const f = this.opts.fetch || globalThis.fetch.bind(globalThis);
    const headers = { Authorization: `Bearer ${this.token}`, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await f(`${this.baseUrl}/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = { title: text };
    }
    if (!r.ok) throw new ApiError(r.status, parsed);
    return parsed;
  }
}
