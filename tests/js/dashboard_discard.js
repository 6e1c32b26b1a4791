// Drives the dashboard in headless Chromium: open a failed job's details, see what it kept, press
// Discard, accept the confirmation and wait for the kept list to go. Prints one JSON line.
const { onJobPage } = require('./browser');

onJobPage(async ({ page, row, dialogs, errors }) => {
  await page.waitForSelector(row, { timeout: 15000 });
  await page.click(`${row} td`);
  await page.waitForSelector('#detail button.discard', { timeout: 10000 });
  const keptBefore = await page.$eval('#detail-fields', (fields) => fields.textContent);
  await page.click('#detail button.discard');
  await page.waitForFunction(() => !document.querySelector('#detail button.discard'), null, { timeout: 15000 });
  const fieldsAfter = await page.$eval('#detail-fields', (fields) => fields.textContent);
  return { keptBefore, fieldsAfter, dialogs, errors };
});
