// Renders benches/compare.sh results: a markdown section in docs/benchmarks.md (between the
// `compare:begin` and `compare:end` markers, replaced on every run) and an SVG chart of CPU
// per delivery and memory per idle connection and room.
//
//   node benches/report.mjs RESULTS.jsonl docs/benchmarks.md docs/benchmarks-compare.svg META_JSON
import fs from 'node:fs'
import os from 'node:os'
import { execSync } from 'node:child_process'

const [resultsPath, mdPath, svgPath, metaJson] = process.argv.slice(2)
const meta = JSON.parse(metaJson || '{}')
const rows = fs.readFileSync(resultsPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))

const SERVERS = ['ymesh-memory', 'ymesh-durable', 'reference', 'y-sweet']
const NAMES = {
  'ymesh-memory': 'ymesh (memory)',
  'ymesh-durable': 'ymesh (store)',
  reference: '@y/websocket-server',
  'y-sweet': 'y-sweet'
}
const COLORS = { 'ymesh-memory': '#1f77b4', 'ymesh-durable': '#6baed6', reference: '#ff7f0e', 'y-sweet': '#2ca02c' }
const TRAFFIC = [
  ['w1', '1 room x 2 clients x 2,000 updates'],
  ['w2', '1 room x 50 clients x 100 updates'],
  ['w3', '100 rooms x 2 clients x 100 updates'],
  ['w4', '10 rooms x 20 clients x 200 updates'],
  ['w1run', 'as w1, typed as one run of 200 kB per writer'],
  ['lat10k', '1,000 rooms x 10 clients (10,000 connections), 1 writer per room, 2,000 updates/s']
]
const get = (w, s) => rows.find((r) => r.workload === w && r.server === s)?.result
const num = (v, d = 1) => (v == null || Number.isNaN(v) ? '–' : Number(v).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }))
const int = (v) => (v == null ? '–' : Math.round(v).toLocaleString('en-US'))
const mb = (kb) => (kb == null ? '–' : (kb / 1024).toFixed(1))
const present = SERVERS.filter((s) => rows.some((r) => r.server === s))
const sh = (c) => { try { return execSync(c, { encoding: 'utf8' }).trim() } catch { return '?' } }

const cpuModel = (sh("grep -m1 'model name' /proc/cpuinfo").split(':')[1] || '?').trim()
const date = new Date().toISOString().replace(/\.\d+Z$/, ' UTC').replace('T', ' ')
const other = (r) => (r && r.other_cpu_s != null && r.active_s ? `${Math.round((100 * r.other_cpu_s) / r.active_s / os.cpus().length)}%` : '–')

const out = []
out.push('<!-- compare:begin (written by benches/compare.sh; edits here are replaced) -->')
out.push('## Side by side: ymesh, the JavaScript reference server and y-sweet (`benches/compare.sh`)')
out.push('')
out.push(`Run ${date}${meta.quick ? ' with `--quick` (counts divided by 10: a smoke test, not a measurement)' : ''}. ` +
  `Machine: ${os.cpus().length} vCPUs (${cpuModel}), ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, Linux ${os.release()}. ` +
  `Versions: ${meta.ymesh} (release build), \`@y/websocket-server\` 0.1.1 with yjs 13.6.33 on Node.js ${process.versions.node} ` +
  `(pinned by \`benches/reference/package-lock.json\`), y-sweet 0.9.1 ${meta.ysweet_note ? `(**not measured: ${meta.ysweet_note}**)` : '(`cargo install y-sweet --version 0.9.1 --locked`, in memory: no store argument)'}.`)
out.push('')
out.push('Command: `' + (meta.command || 'benches/compare.sh') + '`. Every server is started fresh for each workload; the load generator ' +
  '(`benches/load.rs`, its own process) reads the server\'s CPU time and RSS from `/proc/PID`. ' +
  '**Contention:** `other%` is the CPU the rest of the machine (neither the server nor the generator) used during ' +
  'each measurement, as a share of both cores: near 0% the machine was quiet. Wall-clock figures (deliveries/s, ' +
  'latency) move with it; CPU seconds per delivery much less. With `--append`, rows of servers this command did not ' +
  'run keep the figures (and the `other%`) of the run that measured them.')
out.push('')
out.push('### Traffic: flat out, 100-byte Y.Text inserts typed in runs of 64 (w1run: one run), every client a writer (lat10k: 1 writer per room at a set rate)')
out.push('')
out.push('| workload | server | delivered / expected | deliveries/s | latency p50 / p99 / max (ms) | connect+sync p50 / p99 (ms) | **server CPU µs per delivery** | vs reference | RSS before / peak / after (MB) | other% |')
out.push('|---|---|---|---|---|---|---|---|---|---|')
for (const [w, label] of TRAFFIC) {
  const ref = get(w, 'reference')
  for (const s of present) {
    const r = get(w, s)
    if (!r) continue
    if (r.mode === 'failed') { out.push(`| ${w}: ${label} | ${NAMES[s]} | failed: ${r.error} | | | | | | | |`); continue }
    const miss = r.missing > 0 ? ` (**${int(r.missing)} missing**)` : ''
    const closed = r.closed_early > 0 ? ` (**${r.closed_early} closed**)` : ''
    const ratio = ref && ref.server_cpu_us_per_delivery && r.server_cpu_us_per_delivery != null ? `${(r.server_cpu_us_per_delivery / ref.server_cpu_us_per_delivery).toFixed(2)}x` : '–'
    out.push(`| ${w}: ${label} | ${NAMES[s]} | ${int(r.delivered)} / ${int(r.expected)}${miss}${closed} | ${int(r.deliveries_per_s)} | ${num(r.latency_ms_p50, 2)} / ${num(r.latency_ms_p99, 2)} / ${num(r.latency_ms_max, 1)} | ${num(r.connect_ms_p50, 2)} / ${num(r.connect_ms_p99, 1)} | **${num(r.server_cpu_us_per_delivery, 2)}** | ${ratio} | ${mb(r.rss_kb_before)} / ${mb(r.rss_kb_peak)} / ${mb(r.rss_kb_after)} | ${other(r)} |`)
  }
}
out.push('')
out.push('### Idle memory: 10,000 connections over 1,000 rooms (each sends a SyncStep1 and one awareness state)')
out.push('')
out.push('| server | RSS before (MB) | + 1,000 rooms (MB) | + 9,000 more connections (MB) | **kB per connection** | **kB per room** | vs reference (conn / room) | connect+sync p99 (ms) | closed early |')
out.push('|---|---|---|---|---|---|---|---|---|')
const refIdle = get('idle', 'reference')
for (const s of present) {
  const r = get('idle', s)
  if (!r) continue
  if (r.mode === 'failed') { out.push(`| ${NAMES[s]} | failed: ${r.error} | | | | | | | |`); continue }
  const rc = refIdle ? `${(r.kb_per_connection / refIdle.kb_per_connection).toFixed(2)}x / ${(r.kb_per_room / refIdle.kb_per_room).toFixed(2)}x` : '–'
  out.push(`| ${NAMES[s]} | ${mb(r.rss_kb_before)} | ${mb(r.rss_kb_rooms_open)} | ${mb(r.rss_kb_all_open)} | **${num(r.kb_per_connection, 2)}** | **${num(r.kb_per_room, 2)}** | ${rc} | ${num(r.connect_ms_p99, 1)} | ${r.closed_early} |`)
}
const hops = rows.filter((r) => r.workload === 'hops')
if (hops.length) {
  out.push('')
  out.push('### Mesh hops: three in-memory ymesh nodes in a line, writers on the first, receivers 0, 1 or 2 hops away (10 rooms x 5 receivers, 500 updates/s)')
  out.push('')
  out.push('| hops | delivered / expected | latency p50 / p99 / max (ms) | added over 0 hops, p50 / p99 (ms) | CPU µs per delivery (all 3 nodes) |')
  out.push('|---|---|---|---|---|')
  const h0 = hops.find((h) => h.hops === 0)?.result
  for (const h of hops) {
    const r = h.result
    const add = h0 && h.hops > 0 ? `${num(r.latency_ms_p50 - h0.latency_ms_p50, 3)} / ${num(r.latency_ms_p99 - h0.latency_ms_p99, 3)}` : '–'
    out.push(`| ${h.hops} | ${int(r.delivered)} / ${int(r.expected)} | ${num(r.latency_ms_p50, 3)} / ${num(r.latency_ms_p99, 3)} / ${num(r.latency_ms_max, 2)} | ${add} | ${num(r.server_cpu_us_per_delivery, 2)} |`)
  }
}
const starts = rows.filter((r) => r.workload === 'startup').map((r) => r.result)
if (starts.length) {
  out.push('')
  out.push(`### Start-up with ${int(starts[0].stored_rooms)} stored rooms (ymesh with its store)`)
  out.push('')
  out.push('From the moment before `exec` to the timestamp of the `listening on` log line (and to the port accepting): ' +
    starts.map((s) => `${num(s.ms_to_listening, 1)} ms (${num(s.ms_to_accepting, 1)} ms; ${int(s.listed_rooms)} rooms listed)`).join(', ') + '.')
}
const durable = rows.filter((r) => r.workload === 'durable')
if (durable.length) {
  out.push('')
  out.push('### Durable throughput (`benches/durable.rs`, pipelined, 102-acknowledged updates/s, node and clients in one process)')
  out.push('')
  out.push('| rooms | memory | store | store / memory |')
  out.push('|---|---|---|---|')
  for (const rooms of [1, 100]) {
    const m = durable.find((d) => d.server === 'ymesh-memory' && d.result.rooms === rooms)?.result
    const d = durable.find((d) => d.server === 'ymesh-durable' && d.result.rooms === rooms)?.result
    if (!m || !d) continue
    const parse = (t) => Number(t.replace(/,/g, '').replace(/k$/, 'e3'))
    out.push(`| ${rooms} | ${m.updates_per_s_text} | ${d.updates_per_s_text} | ${(parse(d.updates_per_s_text) / parse(m.updates_per_s_text)).toFixed(2)} |`)
  }
}

// Targets
out.push('')
out.push('### Targets (issue 22), judged on this run')
out.push('')
out.push('| target | measured | |')
out.push('|---|---|---|')
const verdict = (ok) => (ok == null ? 'not measured' : ok ? 'met' : '**missed**')
for (const s of ['ymesh-memory', 'ymesh-durable']) {
  const ratios = TRAFFIC.map(([w]) => {
    const r = get(w, s); const ref = get(w, 'reference')
    return r && ref && r.server_cpu_us_per_delivery && ref.server_cpu_us_per_delivery ? [w, r.server_cpu_us_per_delivery / ref.server_cpu_us_per_delivery] : null
  }).filter(Boolean)
  if (!ratios.length) continue
  const worst = Math.max(...ratios.map((x) => x[1]))
  out.push(`| ${NAMES[s]}: CPU per delivery <= 0.1x the reference's on every workload | ${ratios.map(([w, x]) => `${w} ${x.toFixed(2)}x`).join(', ')} | ${verdict(worst <= 0.1)} |`)
}
for (const s of ['ymesh-memory', 'ymesh-durable']) {
  const r = get('idle', s)
  if (!r || !refIdle || r.mode === 'failed') continue
  const c = r.kb_per_connection / refIdle.kb_per_connection; const m = r.kb_per_room / refIdle.kb_per_room
  out.push(`| ${NAMES[s]}: memory per idle connection and per idle room <= 0.25x | ${c.toFixed(2)}x / ${m.toFixed(2)}x | ${verdict(c <= 0.25 && m <= 0.25)} |`)
}
for (const s of ['ymesh-memory', 'ymesh-durable']) {
  const r = get('lat10k', s)
  if (!r || r.mode === 'failed') continue
  out.push(`| ${NAMES[s]}: 10,000 connections, p99 fan-out latency < 50 ms at 2,000 updates/s | p99 ${num(r.latency_ms_p99, 1)} ms, ${int(r.missing)} missing | ${verdict(r.latency_ms_p99 < 50 && r.missing === 0)} |`)
}
if (starts.length) {
  const med = starts.map((s) => s.ms_to_listening).sort((a, b) => a - b)[Math.floor(starts.length / 2)]
  out.push(`| start to listening < 50 ms with 10,000 stored rooms | median ${num(med, 1)} ms | ${verdict(med < 50)} |`)
}
if (hops.length > 1) {
  const h0 = hops.find((h) => h.hops === 0)?.result
  const worst = Math.max(...hops.filter((h) => h.hops > 0).map((h) => (h.result.latency_ms_p99 - h0.latency_ms_p99) / h.hops))
  out.push(`| each mesh hop adds < 1 ms p99 on loopback | ${num(worst, 3)} ms per hop (worst) | ${verdict(worst < 1)} |`)
}
if (durable.length) {
  const parse = (t) => Number(String(t).replace(/,/g, '').replace(/k$/, 'e3'))
  const rs = [1, 100].map((rooms) => {
    const m = durable.find((d) => d.server === 'ymesh-memory' && d.result.rooms === rooms)?.result
    const d = durable.find((d) => d.server === 'ymesh-durable' && d.result.rooms === rooms)?.result
    return m && d ? parse(d.updates_per_s_text) / parse(m.updates_per_s_text) : null
  })
  if (rs.every((x) => x != null)) out.push(`| durable throughput >= 0.5x in-memory, 1 and 100 busy rooms | ${rs[0].toFixed(2)} / ${rs[1].toFixed(2)} | ${verdict(rs[0] >= 0.5 && rs[1] >= 0.5)} |`)
}
out.push('')
out.push('![CPU per delivery and memory per idle connection](benchmarks-compare.svg)')
out.push('<!-- compare:end -->')

const md = fs.readFileSync(mdPath, 'utf8')
const section = out.join('\n')
const begin = md.indexOf('<!-- compare:begin')
const end = md.indexOf('<!-- compare:end -->')
let next
if (begin >= 0 && end > begin) {
  next = md.slice(0, begin) + section + md.slice(end + '<!-- compare:end -->'.length)
} else {
  const firstSection = md.indexOf('\n## ')
  next = firstSection >= 0 ? md.slice(0, firstSection + 1) + section + '\n\n' + md.slice(firstSection + 1) : md + '\n' + section + '\n'
}
fs.writeFileSync(mdPath, next)

// Chart: two panels of grouped bars.
const W = 900; const H = 380
const panel = (x0, width, title, groups, unit, log = false) => {
  const svg = []
  const max = Math.max(1e-9, ...groups.flatMap((g) => g.bars.map((b) => b.v || 0)))
  const top = 50; const bottom = H - 60; const h = bottom - top
  svg.push(`<text x="${x0 + width / 2}" y="24" text-anchor="middle" font-size="14" font-weight="bold">${title}</text>`)
  svg.push(`<line x1="${x0}" y1="${bottom}" x2="${x0 + width}" y2="${bottom}" stroke="#333"/>`)
  const gw = width / Math.max(1, groups.length)
  groups.forEach((g, gi) => {
    const bw = (gw - 16) / Math.max(1, g.bars.length)
    g.bars.forEach((b, bi) => {
      const x = x0 + gi * gw + 8 + bi * bw
      if (b.v == null) {
        svg.push(`<text x="${x + bw / 2}" y="${bottom - 4}" text-anchor="middle" font-size="9" fill="#999">n/a</text>`)
        return
      }
      // Log scale from 0.1 (CPU: values span 0.5 to 1,000 µs), else linear.
      const bh = log ? (Math.max(0, Math.log10(b.v / 0.1)) / Math.log10(max / 0.1)) * h : (b.v / max) * h
      svg.push(`<rect x="${x.toFixed(1)}" y="${(bottom - bh).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${bh.toFixed(1)}" fill="${COLORS[b.s]}"><title>${NAMES[b.s]}: ${b.v.toFixed(2)} ${unit}</title></rect>`)
      svg.push(`<text x="${(x + bw / 2 - 1).toFixed(1)}" y="${(bottom - bh - 3).toFixed(1)}" text-anchor="middle" font-size="9">${b.v >= 100 ? b.v.toFixed(0) : b.v.toFixed(1)}</text>`)
    })
    svg.push(`<text x="${x0 + gi * gw + gw / 2}" y="${bottom + 16}" text-anchor="middle" font-size="11">${g.label}</text>`)
  })
  svg.push(`<text x="${x0}" y="${top - 8}" font-size="10" fill="#555">${unit}</text>`)
  return svg.join('\n')
}
const cpuGroups = TRAFFIC.map(([w]) => ({ label: w, bars: present.map((s) => ({ s, v: get(w, s)?.server_cpu_us_per_delivery ?? null })) }))
const memGroups = [
  { label: 'per idle connection', bars: present.map((s) => ({ s, v: get('idle', s)?.kb_per_connection ?? null })) },
  { label: 'per idle room', bars: present.map((s) => ({ s, v: get('idle', s)?.kb_per_room ?? null })) }
]
const legend = present.map((s, i) => `<rect x="${20 + i * 200}" y="${H - 28}" width="12" height="12" fill="${COLORS[s]}"/><text x="${36 + i * 200}" y="${H - 18}" font-size="12">${NAMES[s]}</text>`).join('\n')
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
${panel(20, 520, 'Server CPU per delivered update (log scale, lower is better)', cpuGroups, 'µs', true)}
${panel(580, 300, 'Idle memory (lower is better)', memGroups, 'kB')}
${legend}
<text x="${W - 10}" y="${H - 4}" text-anchor="end" font-size="9" fill="#777">benches/compare.sh, ${date}</text>
</svg>
`
fs.writeFileSync(svgPath, svg)
