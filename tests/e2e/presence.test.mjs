// End-to-end: live collaboration in the Message Center: who else is viewing or typing in a
// thread (on its row and in the open conversation), and the reply guard's warning.
// Run: node --test tests/e2e/   (tests/e2e/run.sh installs what is missing first)
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { api, barrier, row, seedTenant, shot, signedInPage } from './hub.mjs';
import { browser, hub, useStack } from './stack.mjs';

const T = { timeout: 90_000 };
const LAPTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
useStack();

/** A list that events fill, and a bounded wait for a condition on it, checked on every push. */
function recorded() {
  const items = [];
  const waiting = new Set();
  return {
    items,
    push(item) {
      items.push(item);
      for (const check of [...waiting]) check();
    },
    until(fn, what, ms = 10_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(check);
          reject(new Error(`timed out waiting for ${what}`));
        }, ms);
        const check = () => {
          if (!fn(items)) return;
          waiting.delete(check);
          clearTimeout(timer);
          resolve();
        };
        waiting.add(check);
        check();
      });
    },
  };
}

/** A browser context whose pages record the `presence` frames they send to the hub. */
async function recordingContext(viewport) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(10_000);
  const sent = recorded();
  context.on('page', (page) =>
    page.on('websocket', (ws) =>
      ws.on('framesent', ({ payload }) => {
        const f = JSON.parse(String(payload));
        if (f.type === 'presence') sent.push(f.state);
      }),
    ),
  );
  return { context, sent };
}

const avatar = (scope, user, state) => scope.locator(`.avatar[data-user-id="${user}"]${state ? `[data-state="${state}"]` : ''}`);

/** The box of `locator` lies within the viewport. */
async function onScreen(page, locator, what) {
  const b = await locator.boundingBox();
  const v = page.viewportSize();
  assert.ok(b && b.x >= 0 && b.y >= 0 && b.x + b.width <= v.width + 0.5 && b.y + b.height <= v.height + 0.5, `${what} on screen: ${JSON.stringify(b)} in ${JSON.stringify(v)}`);
}

describe('live collaboration', () => {
  test('two users see each other viewing and typing, on the row and in the conversation, until one leaves', T, async () => {
    const t = await seedTenant(hub, 'presence');
    const { thread } = await t.inbound('+1 555 123 4567', 'Can someone come today?');
    const sam = await signedInPage(browser, hub, t.sam, { viewport: LAPTOP });
    const o = await recordingContext(PHONE);
    const olivia = await signedInPage(browser, hub, t.olivia, { context: o.context });
    await row(sam, thread.id).waitFor();
    await row(olivia, thread.id).waitFor();

    // Sam opens the conversation: Olivia sees him on the row, Sam does not see himself.
    await row(sam, thread.id).click();
    await sam.locator('#conversation li.bubble', { hasText: 'Can someone come today?' }).waitFor();
    const samOnRow = avatar(row(olivia, thread.id), 'sam', 'viewing');
    await samOnRow.waitFor();
    assert.equal((await samOnRow.innerText()).trim(), 'SS', 'initials from the directory name "Sam Sales"');
    assert.equal(await row(olivia, thread.id).locator('.presence').getAttribute('aria-label'), 'Sam Sales viewing');
    assert.equal(await sam.locator('.avatar').count(), 0, 'nobody else is there, and one\'s own entry is not shown');

    // Olivia (on a phone) opens it too: each sees the other in the conversation's header.
    await row(olivia, thread.id).click();
    await avatar(olivia.locator('#thread-presence'), 'sam', 'viewing').waitFor();
    await avatar(sam.locator('#thread-presence'), 'olivia', 'viewing').waitFor();
    await avatar(row(sam, thread.id), 'olivia', 'viewing').waitFor();
    assert.match(await sam.locator('#thread-presence').innerText(), /Also here: Olivia Service/);
    assert.equal(await sam.locator('.avatar[data-user-id="sam"]').count(), 0);
    assert.equal(await olivia.locator('.avatar[data-user-id="olivia"]').count(), 0);

    // Olivia types: Sam sees it on the row, in the header and as "… is typing".
    await olivia.locator('#reply-body').pressSequentially('On my way');
    await sam.locator('#typing-indicator', { hasText: 'Olivia Service is typing…' }).waitFor();
    await avatar(sam.locator('#thread-presence'), 'olivia', 'typing').waitFor();
    await avatar(row(sam, thread.id), 'olivia', 'typing').waitFor();
    await row(sam, thread.id).locator('.presence-note', { hasText: 'typing…' }).waitFor();
    await shot(sam, 'presence-01-typing-laptop');
    await shot(olivia, 'presence-02-conversation-phone');
    await onScreen(olivia, olivia.locator('#thread-presence .avatar[data-user-id="sam"]'), 'Sam\'s avatar on the phone');
    await onScreen(olivia, olivia.locator('#send-reply'), 'Send reply on the phone');

    // The keystrokes stop: back to viewing a few seconds later, and the line goes.
    await avatar(sam.locator('#thread-presence'), 'olivia', 'viewing').waitFor();
    assert.equal(await sam.locator('#typing-indicator').innerText(), '');

    // Olivia goes back to the list (closes the conversation): gone from Sam's header and row.
    await olivia.locator('#detail-back').click();
    await sam.locator('#thread-presence .avatar').waitFor({ state: 'detached' });
    await row(sam, thread.id).locator('.row-presence').waitFor({ state: 'detached' });
    assert.equal(await sam.locator('#thread-presence').isHidden(), true);
    await avatar(row(olivia, thread.id), 'sam', 'viewing').waitFor();
    await shot(olivia, 'presence-03-list-phone');

    // One frame per change, none for the 9 keystrokes beyond the first.
    await o.sent.until((sent) => sent.length >= 4, 'Olivia\'s idle frame');
    assert.deepEqual(o.sent.items, ['viewing', 'typing', 'viewing', 'idle']);

    // Sam's tab is hidden (emulated: the page's visibility state and its event): idle.
    const setHidden = (page, hidden) =>
      page.evaluate((hidden) => {
        if (hidden) Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
        else delete document.visibilityState;
        document.dispatchEvent(new Event('visibilitychange'));
      }, hidden);
    await setHidden(sam, true);
    await row(olivia, thread.id).locator('.row-presence').waitFor({ state: 'detached' });
    await setHidden(sam, false);
    await avatar(row(olivia, thread.id), 'sam', 'viewing').waitFor();
    // So is closing the Message Center window with the conversation in it; opening it is not.
    await sam.locator('#close-center').click();
    await row(olivia, thread.id).locator('.row-presence').waitFor({ state: 'detached' });
    await sam.locator('#open-center').click();
    await avatar(row(olivia, thread.id), 'sam', 'viewing').waitFor();

    // A page loaded now gets the picture from GET /api/v1/presence (no frame: nothing changed).
    await olivia.reload();
    await olivia.locator('#connection[data-state="open"]').waitFor();
    await avatar(row(olivia, thread.id), 'sam', 'viewing').waitFor();
    assert.deepEqual([...sam.errors, ...olivia.errors], []);
    await sam.context().close();
    await o.context.close();
  });

  test('a reply after the customer wrote again is held back with a warning, and "Send anyway" sends it', T, async () => {
    const t = await seedTenant(hub, 'guard');
    const first = await t.inbound('+1 555 123 4567', 'Is 3 pm fine?');
    const thread = first.thread;
    // The page's websocket goes through a relay here that can hold the hub's frames back: the
    // customer's next message is then deterministically in flight when Sam presses Send.
    const context = await browser.newContext({ viewport: LAPTOP });
    context.setDefaultTimeout(10_000);
    let hold = false;
    const held = recorded();
    const sockets = [];
    await context.routeWebSocket(/\/ws/, (ws) => {
      sockets.push(hold ? 'opened while holding' : 'opened');
      const server = ws.connectToServer();
      ws.onMessage((m) => server.send(m));
      server.onMessage((m) => (hold ? held.push({ ws, m }) : ws.send(m)));
    });
    const replies = [];
    context.on('request', (r) => r.method() === 'POST' && r.url().endsWith('/replies') && replies.push(r.postDataJSON()));
    // The page's API calls, to hold frames back only once none is on its way: a reload that
    // started before would otherwise fetch the customer's next message over HTTP.
    const calls = recorded();
    const isApi = (r) => r.url().includes('/api/');
    context.on('request', (r) => isApi(r) && calls.push({ start: `${r.method()} ${new URL(r.url()).pathname}`, hold }));
    for (const end of ['requestfinished', 'requestfailed']) context.on(end, (r) => isApi(r) && calls.push({ end: true }));
    const inFlight = (items) => items.filter((c) => c.start).length - items.filter((c) => c.end).length;
    const sam = await signedInPage(browser, hub, t.sam, { context });
    await row(sam, thread.id).click();
    await sam.locator('#conversation li.bubble', { hasText: 'Is 3 pm fine?' }).waitFor();
    await sam.locator('#reply-body').fill('Yes, 3 pm works');
    await barrier(sam);
    await calls.until((items) => inFlight(items) === 0, 'no API call on its way');

    hold = true;
    const second = await t.inbound('+1 555 123 4567', 'Actually, make it 4 pm');
    await held.until((frames) => frames.some(({ m }) => String(m).includes('Actually, make it 4 pm')), 'the held message.new');
    const since = () => JSON.stringify({ calls: calls.items.filter((c) => c.hold).map((c) => c.start), sockets });
    assert.equal(await sam.locator('#conversation li.bubble', { hasText: '4 pm' }).count(), 0, `not on screen yet: ${since()}`);

    await sam.getByRole('button', { name: 'Send reply' }).click();
    const warning = sam.locator('#reply-warning');
    await warning.filter({ hasText: 'the customer wrote again' }).waitFor();
    await sam.locator('#conversation li.bubble.newer', { hasText: 'Actually, make it 4 pm' }).waitFor();
    assert.equal(await sam.locator('#reply-body').inputValue(), 'Yes, 3 pm works', 'the reply text is kept');
    assert.deepEqual(replies[0], { body: 'Yes, 3 pm works', after_message_id: first.message.id });
    const stored = await api(hub, t.sam, 'GET', `/threads/${thread.id}/messages`);
    assert.deepEqual(stored.messages.map((m) => m.id), [first.message.id, second.message.id], 'nothing was sent');
    await shot(sam, 'presence-04-reply-guard-laptop');

    // The live event, let through now, does not show the message twice.
    hold = false;
    for (const { ws, m } of held.items.splice(0)) ws.send(m);
    await barrier(sam);
    assert.equal(await sam.locator('#conversation li.bubble', { hasText: 'Actually, make it 4 pm' }).count(), 1);

    // At a phone's size the warning, Send anyway and the reply box fit on screen.
    await sam.setViewportSize(PHONE);
    await onScreen(sam, sam.locator('#send-anyway'), 'Send anyway');
    await onScreen(sam, sam.locator('#reply-body'), 'the reply box');
    await shot(sam, 'presence-05-reply-guard-phone');

    await sam.getByRole('button', { name: 'Send anyway' }).click();
    await sam.locator('#conversation li.bubble.outbound', { hasText: 'Yes, 3 pm works' }).waitFor();
    await warning.waitFor({ state: 'hidden' });
    assert.equal(await sam.locator('#reply-body').inputValue(), '');
    assert.deepEqual(replies[1], { body: 'Yes, 3 pm works', force: true });
    const after = await api(hub, t.sam, 'GET', `/threads/${thread.id}/messages`);
    assert.deepEqual(after.messages.map((m) => m.direction), ['inbound', 'inbound', 'outbound']);

    // The next reply answers the newest message on screen (Sam's own): no warning.
    await sam.locator('#reply-body').fill('See you at 4');
    await sam.getByRole('button', { name: 'Send reply' }).click();
    await sam.locator('#conversation li.bubble.outbound', { hasText: 'See you at 4' }).waitFor();
    assert.equal(replies[2].after_message_id, after.messages[2].id);
    assert.equal(await warning.isHidden(), true);
    assert.deepEqual(sam.errors, []);
    await context.close();
  });
});
