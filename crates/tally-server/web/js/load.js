// The load panel: starts a bounded synthetic load run on the server (its
// own users and posts), polls its progress every second and draws it, then
// shows the consistency proof's verdict. Opening the panel while a run is in
// progress picks that run up.

import { api, session, describe } from './api.js';
import { h, fill, heading } from './dom.js';
import { lineChart } from './chart.js';

const ACTIVE = new Set(['seeding', 'running', 'proving']);
const STATE_TEXT = {
  seeding: 'Seeding users and posts…',
  running: 'Running',
  proving: 'Checking every count…',
  done: 'Finished',
  failed: 'Failed',
};

const FIELDS = [
  { name: 'users', label: 'Users', min: 1, max: 100000, step: 1, value: 1000, hint: 'Distinct accounts that like.' },
  { name: 'rate', label: 'Rate (requests/s)', min: 1, max: 5000, step: 1, value: 200, hint: 'Like and unlike requests per second.' },
  { name: 'durationSecs', label: 'Duration (s)', min: 1, max: 120, step: 1, value: 10, hint: 'How long the load runs.' },
  { name: 'posts', label: 'Posts', min: 1, max: 1000, step: 1, value: 20, hint: 'Posts created for the run.' },
  { name: 'zipf', label: 'Hot-post skew (Zipf)', min: 0, max: 3, step: 0.1, value: 1.1, hint: '0 spreads likes evenly; higher piles them on a few posts.' },
];

const ms = (v) => (v === null || v === undefined ? '–' : `${Number(v).toFixed(v < 10 ? 2 : 1)} ms`);
const num = (v) => (v === null || v === undefined ? '–' : Number(v).toLocaleString(undefined, { maximumFractionDigits: 1 }));

export function loadView(main, signal) {
  main.append(heading('Load test'));
  if (!session.loadPanel) {
    main.append(h('p', { class: 'notice', text: session.token
      ? 'The load panel is off on this server (start it with tally serve --load-panel).'
      : 'Sign in to use the load panel.' }));
    return;
  }

  const inputs = {};
  const form = h('form', { class: 'load-form', novalidate: true },
    h('p', { class: 'lede', text: 'Runs a bounded burst of likes and unlikes from synthetic users against this server, then checks that every count is exactly what was acknowledged.' }),
    h('div', { class: 'load-fields' },
      FIELDS.map((f) => {
        const id = `load-${f.name}`;
        inputs[f.name] = h('input', {
          id, name: f.name, type: 'number', inputmode: f.step < 1 ? 'decimal' : 'numeric',
          min: f.min, max: f.max, step: f.step, value: f.value, required: true, 'aria-describedby': `${id}-hint`,
        });
        return h('div', { class: 'field' },
          h('label', { for: id, text: f.label }),
          inputs[f.name],
          h('p', { class: 'hint', id: `${id}-hint`, text: `${f.hint} ${f.min}–${f.max.toLocaleString()}.` }));
      })));
  const start = h('button', { type: 'submit', class: 'primary', text: 'Start run' });
  const formError = h('p', { class: 'form-error', role: 'alert' });
  form.append(formError, start);

  const run = h('section', { class: 'run', hidden: true, 'aria-labelledby': 'run-h' });
  const runTitle = h('h2', { id: 'run-h' });
  const stateBadge = h('span', { class: 'state-badge', role: 'status' });
  const elapsed = h('progress', { max: '1', value: '0', 'aria-label': 'Run progress' });
  const elapsedText = h('span', { class: 'elapsed' });
  const verdict = h('div', { class: 'verdict', hidden: true });
  const throughput = lineChart('Throughput', 'ops/s');
  const latency = lineChart('Latency', 'ms');
  const lag = lineChart('Sync lag', 'ms');
  const summary = h('div', { class: 'summary' });
  const lagNote = h('p', { class: 'hint', hidden: true, text: 'No write-behind lag: on the embedded backend a like is durable before it is answered.' });
  lag.el.append(lagNote);
  fill(run,
    h('div', { class: 'run-head' }, runTitle, stateBadge),
    h('div', { class: 'run-progress' }, elapsed, elapsedText),
    verdict,
    h('div', { class: 'charts' }, throughput.el, latency.el, lag.el),
    summary);

  main.append(h('div', { class: 'load' }, form, run));

  let timer = null;
  let active = false;
  let prefilled = false;
  signal.addEventListener('abort', () => clearTimeout(timer));

  function setActive(on) {
    active = on;
    start.disabled = on;
    start.textContent = on ? 'Run in progress…' : 'Start run';
  }

  function render(r) {
    run.hidden = false;
    run.dataset.state = r.state;
    runTitle.textContent = `Run ${r.id}`;
    stateBadge.textContent = STATE_TEXT[r.state] || r.state;
    stateBadge.dataset.state = r.state;
    const duration = r.config.durationSecs;
    const secs = Math.min(r.elapsedSecs || 0, duration);
    elapsed.value = secs / duration;
    elapsedText.textContent = `${secs.toFixed(1)} / ${duration} s · ${num(r.config.users)} users · ${num(r.config.rate)}/s · ${num(r.config.posts)} posts · zipf ${r.config.zipf}`;

    const samples = r.samples || [];
    const pts = (key) => samples.map((s) => [s.second + 1, s[key]]);
    throughput.update(duration, [
      { label: 'ops', cls: 's1', points: pts('ops') },
      { label: 'errors', cls: 's4', points: pts('errors') },
    ]);
    latency.update(duration, [
      { label: 'p50', cls: 's1', points: pts('p50Ms') },
      { label: 'p99', cls: 's2', points: pts('p99Ms') },
    ]);
    lag.update(duration, [{ label: 'lag', cls: 's3', points: pts('syncLagMs') }]);
    lagNote.hidden = !samples.length || samples.some((s) => s.syncLagMs > 0 || s.syncBacklog > 0);

    renderVerdict(r);
    renderSummary(r);
  }

  function renderVerdict(r) {
    const c = r.consistency;
    if (r.state === 'failed') {
      verdict.hidden = false;
      verdict.dataset.verdict = 'failed';
      fill(verdict, h('p', { class: 'verdict-word', text: 'Run failed' }), h('p', { text: r.error || 'No reason given.' }));
      return;
    }
    if (!c) {
      verdict.hidden = true;
      delete verdict.dataset.verdict;
      return;
    }
    verdict.hidden = false;
    verdict.dataset.verdict = c.verdict;
    const exact = c.verdict === 'exact';
    const diffs = c.differences || [];
    fill(verdict,
      h('p', { class: 'verdict-word', text: exact ? 'Exact' : 'Drift' }),
      h('p', { text: exact
        ? `Every count matches the ledger: ${num(c.likesExpected)} likes from ${num(c.pairs)} user–post pairs on ${num(c.postsChecked)} posts.`
        : `Counts differ from the ${num(c.likesExpected)} likes that were acknowledged (${num(c.postsChecked)} posts checked).` }),
      c.drainSeconds >= 0.05 ? h('p', { class: 'hint', text: `The durable store caught up ${c.drainSeconds.toFixed(2)} s after the load stopped.` }) : null,
      diffs.length ? h('ul', { class: 'diffs' }, diffs.slice(0, 10).map((d) => h('li', { text: typeof d === 'string' ? d : JSON.stringify(d) }))) : null);
  }

  function renderSummary(r) {
    const t = r.total;
    const errors = Object.entries(r.errors || {});
    fill(summary,
      h('dl', { class: 'totals' },
        h('div', {}, h('dt', { text: 'Requests' }), h('dd', { text: t ? num(t.count) : '–' })),
        h('div', {}, h('dt', { text: 'Throughput' }), h('dd', { text: t ? `${num(t.perSec)}/s` : '–' })),
        h('div', {}, h('dt', { text: 'p50' }), h('dd', { text: t ? ms(t.p50Ms) : '–' })),
        h('div', {}, h('dt', { text: 'p99' }), h('dd', { text: t ? ms(t.p99Ms) : '–' })),
        h('div', {}, h('dt', { text: 'Missed' }), h('dd', { text: num(r.missed ?? 0) }))),
      errors.length
        ? h('table', { class: 'errors' },
          h('caption', { text: 'Errors' }),
          h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Error' }), h('th', { scope: 'col', text: 'Count' }))),
          h('tbody', {}, errors.map(([k, v]) => h('tr', {}, h('td', { text: k }), h('td', { text: num(v) })))))
        : h('p', { class: 'no-errors', text: t ? 'No errors.' : '' }));
  }

  async function poll() {
    clearTimeout(timer);
    try {
      const r = await api.currentLoadRun({ signal });
      // The first run seen on opening the panel: start from its settings.
      if (!prefilled) {
        for (const f of FIELDS) if (r.config[f.name] !== undefined) inputs[f.name].value = r.config[f.name];
      }
      prefilled = true;
      render(r);
      setActive(ACTIVE.has(r.state));
    } catch (err) {
      if (signal.aborted) return;
      if (err.status === 404) {
        prefilled = true;
        setActive(false);
        return; // no run yet
      }
      formError.textContent = describe(err);
    }
    if (active && !signal.aborted) timer = setTimeout(poll, 1000);
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    formError.textContent = '';
    const config = {};
    for (const f of FIELDS) {
      const input = inputs[f.name];
      const v = Number(input.value);
      const ok = input.value !== '' && Number.isFinite(v) && v >= f.min && v <= f.max && (f.step < 1 || Number.isInteger(v));
      input.setAttribute('aria-invalid', String(!ok));
      if (!ok) {
        formError.textContent = `${f.label} must be ${f.step < 1 ? 'a number' : 'a whole number'} from ${f.min} to ${f.max.toLocaleString()}.`;
        input.focus();
        return;
      }
      config[f.name] = v;
    }
    setActive(true);
    prefilled = true;
    try {
      render(await api.startLoadRun(config));
    } catch (err) {
      if (signal.aborted) return;
      if (err.code === 'load_run_active') formError.textContent = 'A run is already in progress; showing it.';
      else if (err.code === 'forbidden') formError.textContent = 'The load panel is off, or this account may not run load.';
      else formError.textContent = describe(err);
      if (err.code !== 'load_run_active') {
        setActive(false);
        return;
      }
    }
    timer = setTimeout(poll, 1000);
  });

  poll();
}
