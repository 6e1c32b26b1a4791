// Headless Debian Chromium for the dashboard scripts, and a page that records its script errors.
const { chromium } = require('playwright-core');

async function openPage() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run'],
  });
  // bypassCSP: the page's policy forbids eval, which the driver's waitForFunction uses.
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 }, bypassCSP: true });
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  return { browser, page, errors };
}

// Accept every confirmation the page asks for; the messages, in order.
function acceptDialogs(page) {
  const messages = [];
  page.on('dialog', async (dialog) => { messages.push(dialog.message()); await dialog.accept(); });
  return messages;
}

// The dashboard (HYPERSDK_URL) with one job's row (HYPERSDK_JOB), every confirmation accepted:
// ``body({ page, row, dialogs, errors })`` returns what the script prints as one JSON line.
function onJobPage(body) {
  const main = async () => {
    const { browser, page, errors } = await openPage();
    try {
      const dialogs = acceptDialogs(page);
      await page.goto(process.env.HYPERSDK_URL);
      const row = `tr[data-id="${process.env.HYPERSDK_JOB}"]`;
      console.log(JSON.stringify(await body({ page, row, dialogs, errors })));
    } finally {
      await browser.close();
    }
  };
  main().catch((error) => { console.error(String(error)); process.exit(1); });
}

module.exports = { onJobPage, openPage };
