// benchlab: open-loop (constant arrival rate) load for one URL, reporting ONE JSON line.
// Parameters come from the environment (set by benchlab/k6.py), never from the network:
//   BENCHLAB_URL, BENCHLAB_RATE (iterations/s, integer), BENCHLAB_DURATION_MS,
//   BENCHLAB_PRE_VUS, BENCHLAB_MAX_VUS, BENCHLAB_TIMEOUT_MS, BENCHLAB_HEADERS (JSON object),
//   BENCHLAB_METHOD (default GET), BENCHLAB_BODY_B64 (the request body, base64; empty: none).
// Latency is kept only for completed responses (any status), as wrk does; socket errors
// are classified from k6's error codes into wrk's four kinds.
import encoding from "k6/encoding";
import http from "k6/http";
import { Counter, Trend } from "k6/metrics";

const URL = __ENV.BENCHLAB_URL;
const METHOD = __ENV.BENCHLAB_METHOD || "GET";
const BODY = __ENV.BENCHLAB_BODY_B64 ? encoding.b64decode(__ENV.BENCHLAB_BODY_B64, "std", "s") : null;
const TIMEOUT_MS = Number(__ENV.BENCHLAB_TIMEOUT_MS || 8000);
const PARAMS = {
  headers: JSON.parse(__ENV.BENCHLAB_HEADERS || "{}"),
  timeout: `${TIMEOUT_MS}ms`,
};

const latency = new Trend("benchlab_latency", true);
const latencySumSq = new Counter("benchlab_latency_sumsq");
const completed = new Counter("benchlab_completed");
const errors = {
  connect: new Counter("benchlab_errors_connect"),
  read: new Counter("benchlab_errors_read"),
  write: new Counter("benchlab_errors_write"),
  timeout: new Counter("benchlab_errors_timeout"),
  status: new Counter("benchlab_errors_status"),
};

export const options = {
  scenarios: {
    open: {
      executor: "constant-arrival-rate",
      rate: Number(__ENV.BENCHLAB_RATE),
      timeUnit: "1s",
      duration: `${__ENV.BENCHLAB_DURATION_MS}ms`,
      preAllocatedVUs: Number(__ENV.BENCHLAB_PRE_VUS),
      maxVUs: Number(__ENV.BENCHLAB_MAX_VUS),
      gracefulStop: `${TIMEOUT_MS}ms`,
    },
  },
  summaryTrendStats: ["avg", "min", "max", "count", "p(50)", "p(75)", "p(90)", "p(99)", "p(99.9)", "p(99.99)"],
  discardResponseBodies: true,
};

// k6 error codes (lib/netext/httpext/error_codes.go): 1050 request timeout, 1211 dial
// timeout; 1100-1199 DNS and 1210/1212/1213 dial failures are connect errors; the rest
// (resets, broken pipes, EOF) are read or write errors by the failing operation.
function classify(code, message) {
  if (code === 1050 || code === 1211) return "timeout";
  if ((code >= 1100 && code < 1200) || code === 1210 || code === 1212 || code === 1213) return "connect";
  if (code === 1201 || /^write\b/.test(message || "")) return "write";
  return "read";
}

export default function () {
  const res = http.request(METHOD, URL, BODY, PARAMS);
  if (res.status === 0) {
    errors[classify(res.error_code, res.error)].add(1);
    return;
  }
  const d = res.timings.duration;
  completed.add(1);
  latency.add(d);
  latencySumSq.add(d * d);
  if (res.status < 200 || res.status >= 400) errors.status.add(1);
}

function value(metrics, name, field) {
  return metrics[name] ? metrics[name].values[field] : 0;
}

export function handleSummary(data) {
  const m = data.metrics;
  const out = {
    benchlab: "k6",
    duration_ms: data.state.testRunDurationMs,
    requests: value(m, "benchlab_completed", "count"),
    iterations: value(m, "iterations", "count"),
    dropped: value(m, "dropped_iterations", "count"),
    bytes: value(m, "data_received", "count"),
    vus_max: value(m, "vus_max", "max"),
    errors: {},
    latency_ms: m.benchlab_latency ? m.benchlab_latency.values : null,
    latency_sumsq: value(m, "benchlab_latency_sumsq", "count"),
  };
  for (const kind of Object.keys(errors)) out.errors[kind] = value(m, `benchlab_errors_${kind}`, "count");
  return { stdout: JSON.stringify(out) + "\n" };
}
