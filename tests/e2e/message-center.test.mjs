// End-to-end: the Message Center in headless Chromium against a hub started here.
// Run: node --test tests/e2e/   (tests/e2e/run.sh installs what is missing first)
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { DEV_SECRET, api, barrier, row, seedTenant, shot, signedInPage, startHub, watchPolicy } from './hub.mjs';
import { browser, hub, photos, useStack } from './stack.mjs';

const T = { timeout: 60_000 };
useStack({ withPhotos: true });

const badge = (page, n) => page.locator(`#new-messages[data-count="${n}"]`).waitFor();
const fontWeight = (locator) => locator.locator('td.col-message').evaluate((td) => getComputedStyle(td).fontWeight);

describe('the Message Center', () => {
  test('an inbound message shows a pop-up, raises the badge and lists the thread', T, async () => {
    const t = await seedTenant(hub, 'popup');
    const page = await signedInPage(browser, hub, t.sam, { screenshot: '00-sign-in' });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('switchboard.token')), t.sam);
    await badge(page, 0);
    assert.equal(await page.title(), 'Message Center — Switchboard');

    const img = (n) => ({ url: photos.url(n), content_type: 'image/jpeg' });
    const { thread } = await t.inbound('+1 555 123 4567', 'The water is back', [img(1), img(2)]);

    const popup = page.locator('#toasts .toast.customer').filter({ hasText: 'The water is back' });
    await popup.waitFor();
    assert.match(await popup.innerText(), /Customer Message/);
    assert.match(await popup.innerText(), /\(555\) 123-4567/);
    assert.equal(await page.locator('#toasts').getAttribute('aria-live'), 'polite');
    await badge(page, 1);
    await page.waitForFunction(() => document.title.startsWith('(1) '));

    const r = row(page, thread.id);
    await r.locator('td.col-folder', { hasText: 'Smith kitchen' }).waitFor();
    assert.equal(await r.getAttribute('data-unread'), 'true');
    assert.equal(await r.locator('.msg-icon.is-unread').count(), 1);
    assert.ok(Number(await fontWeight(r)) >= 700, 'unread rows are bold');
    assert.match(await r.innerText(), /<Attachments \(2\) - double-click row to view image>/);
    assert.match(await r.locator('td.col-number').innerText(), /\(555\) 123-4567/);
    assert.equal((await r.locator('td.col-unread').innerText()).trim(), '1');

    // A second, unassigned thread comes first (newest first).
    const second = await t.inbound('+1 555 404 0000', 'Is anyone there?');
    await t.inbound('+1 555 404 0000', 'Hello?');
    await barrier(page);
    // Sam is not in an unassigned thread's audience (subscribe_all is off): nothing new.
    assert.equal(await row(page, second.thread.id).count(), 0);
    await badge(page, 1);
    await shot(page, '01-popup-and-badge');

    // Double-click opens one window per image.
    const ctx = page.context();
    const popups = [];
    const two = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${popups.length} image window(s) opened, not 2`)), 10_000);
      const onPage = (p) => {
        popups.push(p);
        if (popups.length === 2) {
          clearTimeout(timer);
          ctx.off('page', onPage);
          resolve();
        }
      };
      ctx.on('page', onPage);
    });
    await r.dblclick();
    await two;
    await Promise.all(popups.map((p) => p.waitForURL(/\/photos\/\d\.jpg$/)));
    const urls = popups.map((p) => p.url()).sort();
    assert.deepEqual(urls, [photos.url(1), photos.url(2)]);
    await Promise.all(popups.map((p) => p.close()));

    // Clicking the red indicator opens the Message Center.
    await page.locator('#close-center').click();
    await page.locator('#message-center').waitFor({ state: 'hidden' });
    await page.locator('#new-messages').click();
    await page.locator('#message-center').waitFor({ state: 'visible' });

    // The thread view: the conversation and a reply, which marks the thread read.
    await r.click();
    await page.locator('#conversation li.bubble.inbound', { hasText: 'The water is back' }).waitFor();
    await page.locator('#reply-body').fill('On our way');
    await page.getByRole('button', { name: 'Send reply' }).click();
    await page.locator('#conversation li.bubble.outbound', { hasText: 'On our way' }).waitFor();
    await row(page, thread.id).and(page.locator('[data-unread="false"]')).waitFor();
    await badge(page, 0);
    assert.equal(await page.title(), 'Message Center — Switchboard');
    await shot(page, '02-thread-view-and-reply');

    // The folder's Communications view lists both messages.
    await page.locator('#thread-header a.folder-link').click();
    await page.locator('#folder-communications li.bubble', { hasText: 'On our way' }).waitFor();
    assert.equal(await page.locator('#folder-communications li.bubble').count(), 2);
    await page.getByRole('tab', { name: /Photos/ }).click();
    await page.locator('#folder-photos').waitFor();
    await page.getByRole('tab', { name: 'Communications' }).click();
    await page.locator('#folder-communications').waitFor();
    await shot(page, '03-folder-communications');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('mark read from the context menu clears bold and lowers the badge for another user', T, async () => {
    const t = await seedTenant(hub, 'readstate');
    const sam = await signedInPage(browser, hub, t.sam);
    const olivia = await signedInPage(browser, hub, t.olivia);
    const a = (await t.inbound('+1 555 123 4567', 'First question')).thread;
    await t.inbound('+1 555 123 4567', 'Second question');
    await badge(sam, 2);
    await badge(olivia, 2);
    await row(olivia, a.id).and(olivia.locator('.unread')).waitFor();
    assert.ok(Number(await fontWeight(row(olivia, a.id))) >= 700);

    // Sam: right-click → Mark as read.
    await row(sam, a.id).click({ button: 'right' });
    const menu = sam.getByRole('menu', { name: 'Message actions' });
    await menu.waitFor();
    await shot(sam, '04-context-menu');
    await menu.getByRole('menuitem', { name: /Mark as read/ }).click();
    await menu.waitFor({ state: 'hidden' });

    // Olivia, in her own browser context, sees it read and her badge lower.
    await row(olivia, a.id).and(olivia.locator('[data-unread="false"]')).waitFor();
    await badge(olivia, 0);
    assert.ok(Number(await fontWeight(row(olivia, a.id))) < 700, 'no longer bold');
    assert.equal(await row(olivia, a.id).locator('.msg-icon.is-unread').count(), 0);
    await badge(sam, 0);
    await shot(olivia, '05-read-in-second-context');

    // Olivia, from the keyboard: Shift+F10 opens the menu, U marks unread (again for Sam too).
    await row(olivia, a.id).focus();
    await olivia.keyboard.press('Shift+F10');
    await olivia.getByRole('menu').waitFor();
    await olivia.keyboard.press('ArrowDown'); // "Mark as read" is disabled: the first item is "Mark as unread"
    await olivia.keyboard.press('ArrowUp');
    await olivia.keyboard.press('Escape');
    await olivia.getByRole('menu').waitFor({ state: 'hidden' });
    await olivia.keyboard.press('u');
    await badge(sam, 1);
    await row(sam, a.id).and(sam.locator('.unread')).waitFor();
    await olivia.keyboard.press('r');
    await badge(sam, 0);
    await badge(olivia, 0);
    assert.deepEqual([...sam.errors, ...olivia.errors], []);
    await sam.context().close();
    await olivia.context().close();
  });

  test('assign a folder through the dialog (green check, and double-click)', T, async () => {
    const t = await seedTenant(hub, 'assign');
    await api(hub, t.una, 'PUT', '/me/subscriptions', { subscribe_all: true });
    const page = await signedInPage(browser, hub, t.una);
    const a = (await t.inbound('(555) 222-3333', 'Which job is this?')).thread;
    const r = row(page, a.id);
    await r.locator('.unassigned', { hasText: 'unassigned' }).waitFor();

    await r.click({ button: 'right' });
    await page.getByRole('menuitem', { name: /Assign Folder/ }).click();
    const dlg = page.getByRole('dialog', { name: 'Assign Folder' });
    await dlg.waitFor();
    assert.equal(await page.locator('#folder-search').inputValue(), '(555) 222-3333', 'pre-loaded with the number, written as everywhere else');
    const options = dlg.getByRole('option');
    await options.filter({ hasText: 'Jones garage' }).waitFor();
    assert.equal(await options.count(), 2, 'both folders list the number');
    const check = dlg.getByRole('button', { name: 'Assign to the selected folder' });
    assert.equal(await check.isDisabled(), true);
    await options.filter({ hasText: 'Jones garage' }).click();
    await shot(page, '06-assign-folder-dialog');
    await check.click();
    await dlg.waitFor({ state: 'hidden' });
    await r.locator('td.col-folder', { hasText: 'Jones garage' }).waitFor();
    assert.equal((await api(hub, t.una, 'GET', `/threads/${a.id}`)).folder_id, 'F3');
    assert.equal(await r.getAttribute('data-unread'), 'true', 'assigning does not change the read state');

    // A number no folder lists: search by name instead, and double-click to assign.
    const b = (await t.inbound('+1 555 777 8888', 'New customer here')).thread;
    await row(page, b.id).focus();
    await page.keyboard.press('f');
    await dlg.waitFor();
    assert.equal(await page.locator('#folder-search').inputValue(), '(555) 777-8888');
    await page.locator('#assign-status', { hasText: 'No folder matches' }).waitFor();
    await page.locator('#folder-search').fill('smith');
    await page.locator('#folder-search').press('Enter');
    await options.filter({ hasText: 'Smith kitchen' }).dblclick();
    await dlg.waitFor({ state: 'hidden' });
    await row(page, b.id).locator('td.col-folder', { hasText: 'Smith kitchen' }).waitFor();
    assert.equal((await api(hub, t.una, 'GET', `/threads/${b.id}`)).folder_id, 'F1');

    // Link Image(s) to Folder needs a folder; then the photos are in the folder.
    const c = await t.inbound('(555) 222-3333', '', [{ url: photos.url(3), content_type: 'image/jpeg' }]);
    await row(page, a.id).locator('.attachments-note', { hasText: '<Attachments (1) - double-click row to view image>' }).waitFor();
    await row(page, a.id).click({ button: 'right' });
    await page.getByRole('menuitem', { name: /Link Image/ }).click();
    await page.locator('#toasts .toast', { hasText: /image\(s\) added to Jones garage/ }).waitFor();
    await barrier(page); // the images.linked event is in: still one pop-up for one action
    assert.equal(await page.locator('#toasts .toast', { hasText: /image/i }).count(), 1, await page.locator('#toasts').innerText());
    const linked = await api(hub, t.una, 'GET', '/folders/F3/photos');
    assert.deepEqual(linked.map((p) => p.message_id), [c.message.id]);
    await shot(page, '07-assigned-and-linked');
    await row(page, a.id).locator('a.folder-link').click();
    await page.getByRole('tab', { name: 'Photos (1)' }).click();
    await page.locator('#folder-photos img').waitFor();
    await shot(page, '08-folder-photos');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('subscribe to all toggles what arrives', T, async () => {
    const t = await seedTenant(hub, 'subscribe');
    const page = await signedInPage(browser, hub, t.una);
    const toggle = page.getByRole('switch', { name: 'Subscribe to all' });
    assert.equal(await toggle.getAttribute('aria-checked'), 'false');
    const popups = page.locator('#toasts .toast.customer');

    const first = (await t.inbound('+1 555 900 0001', 'Before subscribing')).thread;
    await barrier(page);
    assert.equal(await popups.count(), 0, 'not in the audience: no pop-up');
    assert.equal(await row(page, first.id).count(), 0);
    await badge(page, 0);

    await toggle.click();
    await page.locator('#subscribe-all[aria-checked="true"]').waitFor();
    await row(page, first.id).waitFor(); // the list now holds every thread of the location
    await badge(page, 1);
    await t.inbound('+1 555 900 0002', 'After subscribing');
    await popups.filter({ hasText: 'After subscribing' }).waitFor();
    await badge(page, 2);
    await shot(page, '09-subscribed-to-all');

    await toggle.click();
    await page.locator('#subscribe-all[aria-checked="false"]').waitFor();
    await row(page, first.id).waitFor({ state: 'detached' });
    await badge(page, 0);
    await t.inbound('+1 555 900 0003', 'After unsubscribing');
    await barrier(page);
    assert.equal(await popups.filter({ hasText: 'After unsubscribing' }).count(), 0);
    assert.equal(await page.locator('#thread-rows tr').count(), 0);
    await badge(page, 0);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('a dropped connection reconnects and the messages sent meanwhile appear', T, async () => {
    const t = await seedTenant(hub, 'reconnect');
    const page = await signedInPage(browser, hub, t.sam);
    await page.evaluate(() => {
      window.__resumes = [];
      window.__switchboard.client.on('resumed', (r) => window.__resumes.push(r.replayed));
    });
    const first = (await t.inbound('+1 555 123 4567', 'Before the drop')).thread;
    await row(page, first.id).waitFor();
    await badge(page, 1);

    // The network goes away and the socket with it.
    await page.context().setOffline(true);
    await page.evaluate(() => window.__switchboard.client.drop());
    await page.locator('#connection[data-state="reconnecting"]').waitFor();
    await t.inbound('+1 555 123 4567', 'Sent while offline');
    await t.inbound('(555) 222-3333', 'Also while offline');
    await t.inbound('+1 555 123 4567', 'Still offline');
    await shot(page, '10-offline-reconnecting');
    assert.notEqual(await page.locator('#connection').getAttribute('data-state'), 'open');
    assert.equal(await page.locator('#toasts .toast', { hasText: 'offline' }).count(), 0);

    await page.context().setOffline(false);
    await page.locator('#connection[data-state="open"]').waitFor({ timeout: 20_000 });
    await page.locator('#toasts .toast.customer', { hasText: 'Still offline' }).waitFor();
    await row(page, first.id).locator('td.col-unread', { hasText: '3' }).waitFor();
    await badge(page, 3);
    await page.waitForFunction(() => window.__resumes.length === 1);
    // Replayed in the handshake: 3 messages (+ their unread counts); nothing came twice.
    assert.ok((await page.evaluate(() => window.__resumes[0])) >= 3);
    assert.match(await row(page, first.id).innerText(), /Still offline/);
    assert.equal(await page.locator('#toasts .toast.customer', { hasText: 'Sent while offline' }).count(), 1);
    await shot(page, '11-reconnected-and-replayed');

    // A live message after the reconnect still arrives.
    await t.inbound('+1 555 123 4567', 'Back live');
    await page.locator('#toasts .toast.customer', { hasText: 'Back live' }).waitFor();
    await badge(page, 4);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('the resource drop-down shows a resource view live, and only the audience is notified', T, async () => {
    const t = await seedTenant(hub, 'resources');
    const page = await signedInPage(browser, hub, t.una);
    const sel = page.locator('#resource-select');
    await sel.locator('option', { hasText: 'Sam Sales' }).waitFor({ state: 'attached' });
    const a = (await t.inbound('+1 555 123 4567', 'For the Smiths')).thread;
    await barrier(page);
    assert.equal(await row(page, a.id).count(), 0, 'not in Una\'s own view');
    await sel.selectOption('sam');
    await row(page, a.id).waitFor();
    await barrier(page); // `follow` has no acknowledgement: the ping after it is the barrier
    await t.inbound('+1 555 123 4567', 'Followed live');
    await row(page, a.id).locator('td.col-message', { hasText: 'Followed live' }).waitFor();
    // Una is not in the thread's audience: the list moves, nothing pops up, her badge stays.
    await page.waitForFunction(() => window.__switchboard.state.decided >= 1);
    assert.equal(await page.locator('#toasts .toast').count(), 0, 'no pop-up for another resource\'s message');
    assert.equal(await page.evaluate(() => window.__switchboard.state.alerts), 0);
    await badge(page, 0);
    await shot(page, '12-resource-view');
    await sel.selectOption('');
    await row(page, a.id).waitFor({ state: 'detached' });
    assert.deepEqual(page.errors, []);
    await page.context().close();

    // Olivia (F1's service resource) viewing Sam's list is in the audience: one pop-up.
    const olivia = await signedInPage(browser, hub, t.olivia);
    await olivia.locator('#resource-select option', { hasText: 'Sam Sales' }).waitFor({ state: 'attached' });
    await olivia.locator('#resource-select').selectOption('sam');
    await row(olivia, a.id).waitFor();
    await barrier(olivia);
    await t.inbound('+1 555 123 4567', 'For Olivia too');
    await olivia.locator('#toasts .toast.customer', { hasText: 'For Olivia too' }).waitFor();
    assert.equal(await olivia.locator('#toasts .toast.customer').count(), 1);
    assert.deepEqual(olivia.errors, []);
    await olivia.context().close();
  });

  test('a hub on its development secret offers a one-click sign-in, and no other hub does', T, async () => {
    const errors = [];
    const plain = await browser.newPage();
    await watchPolicy(plain, errors);
    await plain.goto(hub.url);
    await plain.locator('#token-input').waitFor();
    const offered = await plain.evaluate(() => fetch('/api/v1/dev/token').then((r) => r.status));
    assert.equal(offered, 404, 'the test hub runs on its own secret');
    assert.equal(await plain.locator('#dev-signin').isVisible(), false);
    await plain.close();

    const dev = await startHub({ secret: DEV_SECRET });
    try {
      const page = await browser.newPage();
      await watchPolicy(page, errors);
      await page.goto(dev.url);
      await page.getByRole('button', { name: 'Sign in as this user' }).click();
      await page.locator('#connection[data-state="open"]').waitFor();
      assert.match(await page.locator('#whoami').textContent(), /sam/);
      await shot(page, '13-dev-sign-in');
      await page.close();
    } finally {
      await dev.stop();
    }
    assert.deepEqual(errors, []);
  });

  test('the page carries its protective headers and works under its Content-Security-Policy, which is enforced', T, async () => {
    const errors = [];
    const page = await browser.newPage();
    const watcher = await watchPolicy(page, errors);
    const res = await page.goto(hub.url);
    const headers = res.headers();
    const csp = headers['content-security-policy'] || '';
    for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'",
      `connect-src 'self' ws://127.0.0.1:${hub.port} wss://127.0.0.1:${hub.port}`]) {
      assert.ok(csp.includes(directive), `${directive} in ${csp}`);
    }
    assert.ok(!csp.includes('unsafe-'), csp);
    assert.equal(headers['x-content-type-options'], 'nosniff');
    assert.equal(headers['referrer-policy'], 'no-referrer');
    // The module and the style sheet came from the hub and ran: the sign-in form works.
    await page.locator('#token-input').waitFor();
    assert.notEqual(await page.locator('.topbar').evaluate((el) => getComputedStyle(el).display), 'inline');
    const asset = await page.evaluate(async () => {
      const r = await fetch('/message-center.js');
      return { csp: r.headers.get('content-security-policy'), nosniff: r.headers.get('x-content-type-options') };
    });
    assert.equal(asset.csp, csp);
    assert.equal(asset.nosniff, 'nosniff');
    assert.deepEqual(errors, [], 'the page loads without a policy violation');

    // The policy is in force: an injected inline script does not run, and is reported (to the
    // watcher too, so the other tests' empty lists of errors mean something).
    const reported = once(watcher, 'violation');
    const ran = await page.evaluate(() => new Promise((resolve) => {
      document.addEventListener('securitypolicyviolation', () => resolve(window.__inlineRan === true), { once: true });
      const s = document.createElement('script');
      s.textContent = 'window.__inlineRan = true';
      document.head.append(s);
    }));
    assert.equal(ran, false, 'inline script is refused');
    const [violation] = await reported;
    assert.match(violation.message, /script-src/);

    // And no page may frame it.
    const framer = await browser.newPage();
    const refused = framer.waitForEvent('console', { predicate: (m) => /frame-ancestors/.test(m.text()) });
    await framer.setContent(`<iframe src="${hub.url}/"></iframe>`);
    await refused;
    await framer.close();
    await page.close();
  });
});
