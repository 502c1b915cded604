// Signs in to the relay's console in Debian's headless chromium and checks
// what an operator sees. Usage:
//   node console.mjs <base url> <token> <screenshot.png> <app id> <push id>
// Prints one JSON line with what it found; exits non-zero on a failed check.
import { chromium } from "playwright-core";

const [base, token, shot, app, pushId] = process.argv.slice(2);
const fail = (msg) => { console.error(`console check failed: ${msg}`); process.exit(1); };

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  timeout: 30000,
});
const found = {};
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const foreign = [];
  page.on("request", (r) => { if (!r.url().startsWith(base) && !r.url().startsWith("data:")) foreign.push(r.url()); });

  // Not signed in: the sign-in form.
  await page.goto(`${base}/console`, { timeout: 15000 });
  if (!page.url().endsWith("/console/login")) fail(`expected the sign-in page, got ${page.url()}`);

  // A wrong token is refused on the page.
  await page.fill("input[name=token]", "not-a-token");
  await Promise.all([page.waitForLoadState(), page.click("button[type=submit]")]);
  found.wrong_token = await page.textContent("p.err");
  if (!/not valid/.test(found.wrong_token ?? "")) fail(`no refusal shown: ${found.wrong_token}`);

  // The right one: the console.
  await page.fill("input[name=token]", token);
  await Promise.all([page.waitForURL(`${base}/console`), page.click("button[type=submit]")]);
  const text = await page.textContent("main");
  found.app = text.includes(app);
  found.health_ok = (await page.locator("section:has(h2:text('Apps')) .badge.ok").count()) > 0;
  found.call = text.includes(pushId);
  found.delivered = (await page.locator("section:has(h2:text('Recent calls')) .badge.delivered").count()) > 0;
  found.charts = await page.locator("svg").count();
  const cookies = await context.cookies();
  const c = cookies.find((k) => k.name === "pushrelay_console");
  found.cookie = c ? { httpOnly: c.httpOnly, sameSite: c.sameSite, path: c.path } : null;

  // The outcome filter keeps the call under "delivered", drops it under "failed".
  await page.selectOption("select[name=outcome]", "failed");
  await Promise.all([page.waitForLoadState(), page.click(".filters button")]);
  found.filtered_out = !(await page.textContent("main")).includes(pushId);
  await page.selectOption("select[name=outcome]", "delivered");
  await Promise.all([page.waitForLoadState(), page.click(".filters button")]);
  found.filtered_in = (await page.textContent("main")).includes(pushId);

  await page.goto(`${base}/console`);
  await page.screenshot({ path: shot, fullPage: true });

  // Sign out (the form carries the CSRF token): back to the sign-in page.
  await Promise.all([page.waitForURL(`${base}/console/login`), page.click("header form button")]);
  found.signed_out = page.url().endsWith("/console/login");
  found.foreign_requests = foreign;
} finally {
  await browser.close();
}
console.log(JSON.stringify(found));
for (const k of ["app", "health_ok", "call", "delivered", "filtered_out", "filtered_in", "signed_out"]) {
  if (!found[k]) fail(`${k} is false`);
}
if (!found.cookie || !found.cookie.httpOnly || found.cookie.sameSite !== "Strict") fail(`cookie flags: ${JSON.stringify(found.cookie)}`);
if (found.foreign_requests.length) fail(`requests outside the relay: ${found.foreign_requests}`);
if (found.charts < 4) fail(`expected 4 charts, saw ${found.charts}`);
