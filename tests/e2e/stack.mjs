// What every browser test file runs against: a hub built and started here, headless Chromium
// and, when asked, a server of test photos. `useStack()` starts them before the file's tests
// and stops them after; `hub`, `browser` and `photos` are live bindings, set once it started.
import { after, before } from 'node:test';
import { buildHub, launch, startHub, startPhotoServer } from './hub.mjs';

export let hub;
export let browser;
export let photos;

export function useStack({ withPhotos = false } = {}) {
  before(async () => {
    buildHub();
    hub = await startHub();
    if (withPhotos) photos = await startPhotoServer();
    browser = await launch();
  }, { timeout: 700_000 });

  after(async () => {
    await browser?.close();
    await hub?.stop();
    await photos?.stop();
  });
}
