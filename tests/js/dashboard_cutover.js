// Drives the dashboard in headless Chromium: a warm job in precopy shows a "Cut over" button and its
// passes; pressing it (and accepting the confirmation) cuts over, and the row ends "completed".
// Prints one JSON line.
const { onJobPage } = require('./browser');

onJobPage(async ({ page, row, dialogs, errors }) => {
  await page.waitForSelector(`${row} button.cutover`, { timeout: 60000 });
  await page.click(`${row} td`);
  await page.waitForFunction(() => document.querySelector('#detail-fields').textContent.includes('Warm passes'),
    null, { timeout: 30000 });
  const passes = await page.$eval('#detail-fields', (fields) => fields.textContent);
  await page.click(`${row} button.cutover`);
  await page.waitForFunction((selector) => {
    const cell = document.querySelector(`${selector} td:nth-child(2)`);
    return cell && (cell.textContent === 'completed' || cell.textContent === 'failed');
  }, row, { timeout: 120000 });
  const status = await page.$eval(`${row} td:nth-child(2)`, (cell) => cell.textContent);
  return { passes, dialogs, status, errors };
});
