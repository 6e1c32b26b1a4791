// Drives the dashboard in headless Chromium (playwright-core, Debian's /usr/bin/chromium):
// enter the token, watch a running job's progress bar move, open its details, save a
// screenshot, press Cancel and wait for the row to say "cancelled". Prints one JSON line.
const { openPage } = require('./browser');

const url = process.env.HYPERSDK_URL;
const token = process.env.HYPERSDK_TOKEN;
const jobId = process.env.HYPERSDK_JOB;
const screenshot = process.env.SCREENSHOT;

async function main() {
  const { browser, page, errors } = await openPage();
  try {
    await page.goto(url);
    await page.waitForSelector('#login:not([hidden])', { timeout: 10000 });  // auth is on: asked once
    await page.fill('#token', token);
    await page.click('#login button');
    const row = `tr[data-id="${jobId}"]`;
    await page.waitForSelector(`${row} .bar`, { timeout: 15000 });
    await page.waitForFunction(() => document.querySelector('#live').className === 'on', null, { timeout: 10000 });
    const progress = async () => parseFloat(await page.getAttribute(`${row} [role=progressbar]`, 'aria-valuenow'));
    const first = await progress();
    await page.waitForFunction(([selector, before]) => {
      const bar = document.querySelector(`${selector} [role=progressbar]`);
      return bar && parseFloat(bar.getAttribute('aria-valuenow')) > before + 2;
    }, [row, first], { timeout: 30000 });
    const second = await progress();
    await page.click(`${row} td`);
    await page.waitForSelector('#detail:not([hidden])');
    await page.waitForTimeout(1500);  // a few more samples for the throughput chart
    const chartPixels = await page.evaluate(() => {
      const c = document.querySelector('#throughput');
      const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let blue = 0;
      for (let i = 0; i < data.length; i += 4) if (data[i + 2] > 200 && data[i] < 120) blue++;
      return blue;
    });
    const diskBars = await page.$$eval('#detail .disk .bar', (bars) => bars.length);
    await page.screenshot({ path: screenshot, fullPage: true });
    await page.click(`${row} button.cancel`);
    await page.waitForFunction((selector) => {
      const cell = document.querySelector(`${selector} td:nth-child(2)`);
      return cell && cell.textContent === 'cancelled';
    }, row, { timeout: 15000 });
    console.log(JSON.stringify({ first, second, chartPixels, diskBars, errors, reloginAsked: false }));
  } finally {
    await browser.close();
  }
}

main().catch((error) => { console.error(String(error)); process.exit(1); });
