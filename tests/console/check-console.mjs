// Drives offsite's duty console in headless Chromium for tests/test_console.py:
//   node check-console.mjs URL TOKEN SCREENSHOT.png
// Prints JSON: the alerts as listed, the detail of the newest red one, what a reconnect
// showed, and any page errors.
import { chromium } from 'playwright-core'

const [url, token, shot] = process.argv.slice(2)
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox'],
})
const out = { errors: [] }
try {
  const page = await browser.newPage({ viewport: { width: 1300, height: 900 } })
  page.on('pageerror', (e) => out.errors.push(String(e)))
  await page.goto(`${url}#token=${token}`)
  await page.waitForSelector('#conn.up', { timeout: 20000 })
  await page.waitForSelector('#alerts li.sev-red', { timeout: 20000 })
  out.alerts = await page.$$eval('#alerts li', (items) =>
    items.map((li) => ({ id: li.id, severity: li.dataset.severity, text: li.innerText })),
  )
  // filters: only red shows
  await page.selectOption('#f-sev', 'red')
  out.visible_when_red = await page.$$eval('#alerts li', (items) =>
    items.filter((li) => !li.hidden).map((li) => li.dataset.severity),
  )
  await page.selectOption('#f-sev', '')
  // a cooperating department sees the clues it is notified of
  await page.selectOption('#f-dep', 'market')
  out.visible_for_market = await page.$$eval('#alerts li', (items) =>
    items.filter((li) => !li.hidden).length,
  )
  await page.selectOption('#f-dep', '')
  await page.click('#alerts li.sev-red')
  await page.waitForSelector('#detail dl', { timeout: 10000 })
  await page.waitForTimeout(500)
  out.detail = await page.$eval('#detail', (el) => el.innerText)
  out.chart = await page.$$eval('#detail svg path', (paths) => paths.length)
  await page.screenshot({ path: shot, fullPage: false })
  // the live stream drops and comes back: the console resumes after the last alert it saw
  out.seen_before = await page.evaluate(() => lastSeq)
  await page.evaluate(() => socket.close())
  await page.waitForSelector('#conn.down', { timeout: 5000 })
  await page.waitForSelector('#conn.up', { timeout: 15000 })
  out.reconnected = true
  await page.waitForTimeout(500)
  out.seen_after = await page.evaluate(() => lastSeq)
  out.listed_after = await page.$$eval('#alerts li', (items) => items.length)
} finally {
  await browser.close()
}
console.log(JSON.stringify(out))
