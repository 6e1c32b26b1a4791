// Drives the dashboard in headless Chromium: open a failed job's details, see what it kept, press
// Discard, accept the confirmation and wait for the kept list to go. Prints one JSON line.
const { acceptDialogs, openPage } = require('./browser');

const url = process.env.HYPERSDK_URL;
const jobId = process.env.HYPERSDK_JOB;

async function main() {
  const { browser, page, errors } = await openPage();
  try {
    const dialogs = acceptDialogs(page);
    await page.goto(url);
    const row = `tr[data-id="${jobId}"]`;
    await page.waitForSelector(row, { timeout: 15000 });
    await page.click(`${row} td`);
    await page.waitForSelector('#detail button.discard', { timeout: 10000 });
    const keptBefore = await page.$eval('#detail-fields', (fields) => fields.textContent);
    await page.click('#detail button.discard');
    await page.waitForFunction(() => !document.querySelector('#detail button.discard'), null, { timeout: 15000 });
    const fieldsAfter = await page.$eval('#detail-fields', (fields) => fields.textContent);
    console.log(JSON.stringify({ keptBefore, fieldsAfter, dialogs, errors }));
  } finally {
    await browser.close();
  }
}

main().catch((error) => { console.error(String(error)); process.exit(1); });
