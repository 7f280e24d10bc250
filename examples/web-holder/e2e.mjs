// The browser half of the web holder's end-to-end test (tests/tests/web.rs
// starts the connector, the issuer and the page's server, then runs this).
// It drives Debian's Chromium with playwright-core: opens the page, pastes
// the invitation, waits for the credential and part of the burst (live, on
// GetMessageStream), reloads the page in the middle of the burst (which it
// then receives by polling GetMessagesPaginated), waits for everything, times
// seal/open in the page, takes a screenshot, and prints one JSON line
// (`result: {...}`) for the Rust test to check. Every wait is bounded; the
// browser is closed on every path.
//
// Its one argument is JSON: PAGE_URL, INVITATION, EXPECTED (credentials in
// all), RELOAD_AT (credentials stored before the reload), SCREENSHOT,
// CHROMIUM, USER_DATA_DIR, TIMEOUT_MS.
import { chromium } from "playwright-core";

const settings = JSON.parse(process.argv[2] ?? "{}");
const env = (name, fallback) => {
  const value = settings[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not given`);
  return String(value);
};
const pageUrl = env("PAGE_URL");
const invitation = env("INVITATION");
const expected = Number(env("EXPECTED"));
const reloadAt = Number(env("RELOAD_AT"));
const screenshot = env("SCREENSHOT");
const timeout = Number(env("TIMEOUT_MS", "120000"));

const browser = await chromium.launchPersistentContext(env("USER_DATA_DIR"), {
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1200, height: 1400 },
});
const deadline = setTimeout(() => {
  console.error(`e2e.mjs: gave up after ${timeout} ms`);
  browser.close().finally(() => process.exit(2));
}, timeout + 30000);

const console_lines = [];
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.setDefaultTimeout(timeout);
  page.on("console", (message) => console_lines.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => console_lines.push(`pageerror: ${error.message}`));

  const open = async () => {
    await page.goto(pageUrl);
    await page.waitForFunction(() => window.confidant?.holder, null, { timeout });
  };
  // Polls `check` (in the page) until it is true, within `timeout`.
  const until = async (what, check, arg) => {
    const end = Date.now() + timeout;
    while (!(await page.evaluate(check, arg))) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await page.waitForTimeout(20);
    }
  };

  await open();
  const identity = await page.evaluate(() => window.confidant.holder.identityKey);
  await page.fill("#invitation", invitation);
  await page.click("#accept");
  await page.waitForFunction(
    () => window.confidant.steps.some((line) => line.startsWith("joined connection ")),
    null, { timeout },
  );
  // Part of the burst is in: reload now, in the middle of it.
  // (Counted from the steps, which need no lock: the holder's calls queue
  // behind the deliveries it is processing.)
  await until(
    `${reloadAt} stored credentials`,
    (n) => window.confidant.steps.filter((line) => line.startsWith("credential received")).length >= n,
    reloadAt,
  );
  const beforeReload = await page.evaluate(() => [...window.confidant.steps]);
  const storedAtReload = beforeReload.filter((line) => line.startsWith("credential received")).length;
  // After the reload the page polls GetMessagesPaginated instead of
  // streaming, so both ways of delivery are exercised.
  await page.evaluate(() => localStorage.setItem("delivery", "poll"));
  await page.reload();
  await page.waitForFunction(() => window.confidant?.holder, null, { timeout });
  const identityAfter = await page.evaluate(() => window.confidant.holder.identityKey);
  const storedAfterReload = await page.evaluate(() => window.confidant.storedAtOpen);
  await until(
    `${expected} stored and answered credentials`,
    async (n) => {
      const all = await window.confidant.holder.credentials();
      return all.length >= n && all.every((credential) => credential.replied);
    },
    expected,
  );
  // Late copies would come now: give them a moment to show up.
  await page.waitForTimeout(1500);
  const credentials = await page.evaluate(() => window.confidant.holder.credentials());
  const connections = await page.evaluate(() => window.confidant.holder.connections());
  const waiting = await page.evaluate(() => window.confidant.holder.waiting());
  const afterReload = await page.evaluate(() => [...window.confidant.steps]);
  // A page refuses a damaged invitation with a typed error.
  const refused = await page.evaluate(async () => {
    try {
      await window.confidant.holder.acceptInvitation("confidant2:AAAA");
      return null;
    } catch (error) {
      return { kind: error.kind, message: error.message };
    }
  });
  // A second tab of the same holder is refused while this one lives.
  const second = await browser.newPage();
  const secondSteps = [];
  second.on("console", (message) => console_lines.push(`second tab ${message.type()}: ${message.text()}`));
  await second.goto(pageUrl);
  await second.waitForFunction(
    () => window.confidant?.steps.some((line) => line.startsWith("could not start")),
    null, { timeout },
  );
  secondSteps.push(...(await second.evaluate(() => window.confidant.steps)));
  await second.close();
  await page.click("#time");
  await page.waitForFunction(() => document.getElementById("timing").textContent.length > 0, null, { timeout });
  const timing = await page.evaluate(() => document.getElementById("timing").textContent);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log("result: " + JSON.stringify({
    identity, identityAfter, storedAtReload, storedAfterReload, credentials, connections,
    waiting, refused, timing, beforeReload, afterReload, secondSteps,
  }));
} catch (error) {
  console.error(`e2e.mjs: ${error?.stack ?? error}`);
  console.error(console_lines.join("\n"));
  process.exitCode = 1;
} finally {
  clearTimeout(deadline);
  await browser.close();
}
