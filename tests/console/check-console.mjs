// Drives offsite's duty console in headless Chromium for tests/test_console.py:
//   node check-console.mjs URL TOKEN SCREENSHOT.png
// Prints the line "ready" once two consoles are live and waiting for a new alert (the test
// then reports an elevator clue), then one line of JSON: the alerts as listed, the detail of
// the newest red one, what a reconnect showed, the filters, the acknowledgement as both
// consoles saw it, the steps taken from the clue's detail, and any page errors.
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
  out.red_case = await page.$eval('#case', (el) => el.innerText)
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

  // A second officer's console, in a browser context of its own.
  const other = await (await browser.newContext({ viewport: { width: 1300, height: 900 } })).newPage()
  other.on('pageerror', (e) => out.errors.push('second console: ' + String(e)))
  await other.goto(`${url}#token=${token}`)
  await other.waitForSelector('#conn.up', { timeout: 20000 })
  await other.waitForSelector('#alerts li', { timeout: 20000 })
  // the domains come from the registry, before any alert names them
  out.domains = await page.$$eval('#f-dom option', (opts) => opts.map((o) => o.value).filter(Boolean))
  console.log('ready')
  const asked = Date.now()

  // the elevator clue the test reports now arrives live, on top
  const lift = await page.waitForSelector('#alerts li[data-domain="equipment"]', { timeout: 20000 })
  const liftId = await lift.getAttribute('id')
  out.report_to_screen_ms = Date.now() - asked  // includes the test's POST of the report
  out.live = await page.$eval('#alerts li', (li) => ({
    id: li.id, domain: li.dataset.domain, classes: li.className, text: li.innerText,
  }))
  out.unacked_count = await page.$eval('#unacked-count', (el) => (el.hidden ? '' : el.textContent))

  const visible = () => page.$$eval('#alerts li', (items) =>
    items.filter((li) => !li.hidden).map((li) => ({ id: li.id, domain: li.dataset.domain })),
  )
  await page.selectOption('#f-dom', 'equipment')
  out.only_equipment = await visible()
  await page.selectOption('#f-dom', 'gas')
  out.only_gas = await visible()
  // special equipment: market leads, housing cooperates, fire has no part in it
  await page.selectOption('#f-dom', 'equipment')
  await page.selectOption('#f-dep', 'housing')
  out.equipment_for_housing = await visible()
  await page.selectOption('#f-dep', 'fire')
  out.equipment_for_fire = await visible()
  out.empty_note_shown = await page.$eval('#no-alerts', (el) => !el.hidden)
  await page.selectOption('#f-dep', '')
  await page.selectOption('#f-dom', '')

  // acknowledged on the first console; the second sees it live
  out.second_before = await other.$eval(`#${liftId}`, (li) => li.dataset.acknowledged)
  const clicked = Date.now()
  await page.click(`#${liftId} button.ack`)
  await page.waitForSelector(`#${liftId}.acked`, { timeout: 10000 })
  await other.waitForSelector(`#${liftId}.acked`, { timeout: 10000 })
  out.ack_to_second_console_ms = Date.now() - clicked
  out.second_after = await other.$eval(`#${liftId}`, (li) => ({
    acknowledged: li.dataset.acknowledged, text: li.innerText, position: [...li.parentNode.children].indexOf(li),
  }))
  out.unacked_count_after = await page.$eval('#unacked-count', (el) => (el.hidden ? '' : el.textContent))
  // the other way round, on a row below the top: acknowledging is not news, rows keep their places
  const order = () => page.$$eval('#alerts li', (items) => items.map((li) => li.id))
  out.order_before = await order()
  const gasOrange = await other.$eval('#alerts li.sev-orange.unacked', (li) => li.id)
  out.acked_by_second = gasOrange
  await other.click(`#${gasOrange} button.ack`)
  await page.waitForSelector(`#${gasOrange}.acked`, { timeout: 10000 })
  out.order_after = await order()

  // the second officer has the clue open while the first takes its steps
  await other.click(`#${liftId} .title`)
  await other.waitForSelector('#detail form[data-act="triage"]', { timeout: 10000 })

  // the clue's detail: an illegal step is refused with the API's reason, then the steps
  await page.click(`#${liftId} .title`)
  await page.waitForSelector('#detail form[data-act="triage"]', { timeout: 10000 })
  const status = (s) =>
    page.waitForFunction((want) => document.querySelector('#clue-status')?.textContent.startsWith(want), s, { timeout: 10000 })
  await page.fill('#hdl-note', 'called the maintenance company')
  await page.click('form[data-act="handle"] button')
  await page.waitForFunction(() => document.querySelector('#action-error')?.textContent.length > 0, null, { timeout: 10000 })
  out.refused = await page.$eval('#action-error', (el) => el.textContent)
  await page.fill('#tri-reason', 'video confirms a stalled car')
  await page.click('form[data-act="triage"] button')
  await status('triaged')
  await other.waitForSelector('#changed:not([hidden])', { timeout: 10000 })
  out.second_notice = await other.$eval('#changed', (el) => el.innerText)
  out.second_status = await other.$eval('#clue-status', (el) => el.textContent)
  await page.selectOption('#asg-dep', 'housing')
  await page.fill('#asg-reason', 'residential estate')
  await page.click('form[data-act="assign"] button')
  await status('assigned')
  out.after_assign = await page.$eval('#clue-department', (el) => el.textContent)
  await page.selectOption('#trf-dep', 'emergency')
  await page.fill('#trf-reason', 'people trapped: emergency management leads')
  await page.click('form[data-act="transfer"] button')
  await status('transferred')
  out.after_transfer = await page.$eval('#clue-department', (el) => el.textContent)
  await page.fill('#esc-reason', 'repeated entrapment')
  await page.click('form[data-act="escalate"] button')
  await page.waitForSelector('#case', { timeout: 10000 })
  await page.fill('#case-investigate', 'site visit booked')
  await page.click('form[data-case="investigate"] button')
  await page.waitForFunction(() => document.querySelector('#case-status')?.textContent === 'investigating', null, { timeout: 10000 })
  // a fine without its amount is refused by the API, then decided with it
  await page.selectOption('#case-decide-kind', 'fine')
  await page.click('form[data-case="decide"] button')
  await page.waitForFunction(() => document.querySelector('#case-error')?.textContent.length > 0, null, { timeout: 10000 })
  out.case_refused = await page.$eval('#case-error', (el) => el.textContent)
  await page.selectOption('#case-decide-kind', 'fine')
  await page.fill('#case-decide-amount', '2000')
  await page.fill('#case-decide', 'safety gear missing')
  await page.click('form[data-case="decide"] button')
  await page.waitForFunction(() => document.querySelector('#case-status')?.textContent === 'decision', null, { timeout: 10000 })
  out.decision = await page.$eval('#case-decision', (el) => el.textContent)
  out.case = await page.$eval('#case', (el) => ({ id: el.dataset.caseId, text: el.innerText }))
  out.history = await page.$$eval('#detail > table tbody tr', (rows) => rows.map((r) => r.innerText))
  out.deadline = await page.$eval('#clue-deadline', (el) => el.textContent)
  out.lift_id = liftId.slice(2)
  await page.screenshot({ path: shot.replace(/\.png$/, '-case.png'), fullPage: true })
} catch (e) {
  // what the page itself said is usually the reason a wait timed out
  console.error('page errors: ' + JSON.stringify(out.errors))
  throw e
} finally {
  await browser.close()
}
console.log(JSON.stringify(out))
