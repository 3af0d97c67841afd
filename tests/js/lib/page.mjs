// Helpers for driving the chat page in headless Chromium (playwright-core): open a page,
// enter a name, join a room, chat, and wait (bounded) for what a person would see.

import assert from 'node:assert/strict';

import { sleep } from './server.mjs';

export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
// Playwright gives every launch a new, empty temporary --user-data-dir of its own.
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
export const WAIT_MS = 10_000; // every Playwright wait is bounded by this
export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/** A new context + page at `url` (chat page or legacy page), with bounded waits. */
export async function openPage(browser, requests, url, viewport = DESKTOP) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  context.setDefaultTimeout(WAIT_MS);
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => { if (msg.type() === 'error') problems.push(`console: ${msg.text()}`); });
  page.on('request', (req) => requests.push(req.url()));
  page.on('websocket', (ws) => requests.push(ws.url()));
  page.problems = problems;
  await page.goto(url, { timeout: WAIT_MS });
  return { context, page };
}

/** Polls `check` (bounded) until it returns a truthy value; fails with `what` otherwise. */
export async function until(check, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await sleep(100);
  }
}

export const tid = (id) => `[data-testid="${id}"]`;
export const texts = (page, selector) => page.locator(selector).allTextContents();

export async function connState(page) {
  return page.locator(tid('connection-state')).getAttribute('data-state');
}

export async function enterName(page, name) {
  await page.locator(tid('name-input')).fill(name);
  await page.locator(tid('name-submit')).click();
  await page.locator(tid('chat-view')).waitFor({ state: 'visible' });
  await until(async () => (await connState(page)) === 'connected', `${name}'s page to connect`);
}

export async function joinRoom(page, room) {
  await page.locator(tid('room-input')).fill(room);
  await page.locator(tid('join-submit')).click();
  await until(async () => (await page.locator(tid('current-room')).textContent()) === room
    && (await page.locator(tid('room-view')).isVisible()), `joining ${room}`);
}

export async function sendChat(page, text) {
  await page.locator(tid('message-input')).fill(text);
  await page.locator(tid('send-button')).click();
}

/** Waits for `n` room events of `type` from `sender` in the page's message list. */
export async function seeEvents(page, type, sender, n = 1) {
  const sel = `${tid('messages')} [data-type="${type}"][data-sender="${sender}"]`;
  await until(async () => (await page.locator(sel).count()) >= n, `${n} ${type} of ${sender}`);
}

export async function seeChat(page, sender, text) {
  await until(async () => {
    const items = page.locator(`${tid('messages')} [data-type="CHAT"][data-sender="${sender}"] ${tid('message-text')}`);
    return (await items.allTextContents()).includes(text);
  }, `CHAT "${text}" from ${sender}`);
}

export async function seeParticipants(page, names) {
  const want = [...names].sort().join(',');
  await until(async () => {
    const got = (await texts(page, `${tid('participants')} ${tid('participant')}`)).sort().join(',');
    const count = await page.locator(tid('participant-count')).textContent();
    return got === want && count === String(names.length);
  }, `participants ${want}`);
}

export async function seeRoomCount(page, room, n) {
  await until(
    async () => (await page.locator(`${tid('room-item')}[data-room-id="${room}"] ${tid('room-count')}`).textContent({ timeout: 500 })) === String(n),
    `room list: ${room} with ${n}`,
  );
}

