'use strict';
// Render benchmark rows as a Markdown table and persist them as JSON.
//
// Row shape: { name, value, unit, baseline, baselineValue, ratio, target, pass }
//   baseline       key of the baseline row this figure is compared to (e.g. 'wsRelay',
//                  'redisStreamsLatency.p99'), or null for baseline rows themselves
//   baselineValue  that baseline's value measured in the same run
//   ratio          value / baselineValue
//   target         optional free text or comparison such as '>=0.8' (see README)
//   pass           true / false / null (no target)
const fs = require('node:fs');
const path = require('node:path');

const COLUMNS = ['name', 'value', 'unit', 'baseline', 'baselineValue', 'ratio', 'target', 'pass'];
const HEADERS = ['Benchmark', 'Value', 'Unit', 'Baseline', 'Baseline value', 'Ratio', 'Target', 'Pass'];
const DEFAULT_JSON = path.join(__dirname, '..', 'results', 'latest.json');

function fmtNumber(v) {
  if (v === null || v === undefined || v === '') return '';
  if (typeof v !== 'number') return String(v);
  if (!Number.isFinite(v)) return String(v);
  const abs = Math.abs(v);
  if (abs >= 1000) return Math.round(v).toLocaleString('en-US');
  if (abs >= 100) return v.toFixed(0);
  if (abs >= 10) return v.toFixed(1);
  if (abs >= 1) return v.toFixed(2);
  if (abs === 0) return '0';
  return v.toPrecision(2);
}

function fmtCell(col, v, row = {}) {
  if (col === 'baseline' && (v === null || v === undefined) && row.key) return `${row.key} (self)`;
  if (v === null || v === undefined) return '';
  switch (col) {
    case 'value':
    case 'baselineValue':
      return fmtNumber(v);
    case 'ratio':
      return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(2) + '×' : String(v);
    case 'pass':
      return v === true ? 'PASS' : v === false ? 'FAIL' : String(v);
    default:
      return String(v).replace(/\|/g, '\\|').replace(/\n/g, ' ');
  }
}

/** Markdown table as a string. */
function formatTable(rows) {
  const body = rows.map((r) => COLUMNS.map((c) => fmtCell(c, r[c], r)));
  const numeric = new Set(['value', 'baselineValue', 'ratio']);
  const widths = HEADERS.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i].length)));
  const line = (cells) => '| ' + cells.map((c, i) => (numeric.has(COLUMNS[i]) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' | ') + ' |';
  const sep = '| ' + widths.map((w, i) => (numeric.has(COLUMNS[i]) ? '-'.repeat(w - 1) + ':' : '-'.repeat(w))).join(' | ') + ' |';
  return [line(HEADERS), sep, ...body.map(line)].join('\n');
}

/** Keep only the documented row fields (plus optional extra info), with nulls for missing ones. */
function normalizeRows(rows) {
  return rows.map((r) => {
    const out = {};
    for (const c of COLUMNS) out[c] = r[c] === undefined ? null : r[c];
    for (const extra of ['key', 'suite', 'note', 'samples']) if (r[extra] !== undefined) out[extra] = r[extra];
    return out;
  });
}

/** Write the rows as a JSON array (default bench/results/latest.json). Returns the file path. */
function writeJson(rows, file = DEFAULT_JSON) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(normalizeRows(rows), null, 2) + '\n');
  return file;
}

/** Print the Markdown table to stdout and write the JSON file. */
function printTable(rows, { file = DEFAULT_JSON, out = process.stdout } = {}) {
  out.write(formatTable(rows) + '\n');
  const written = writeJson(rows, file);
  out.write(`\nrows written to ${path.relative(process.cwd(), written) || written}\n`);
  return written;
}

module.exports = { printTable, formatTable, writeJson, normalizeRows, fmtNumber, COLUMNS, DEFAULT_JSON };
