// graphile-worker side of agentpool's queue benchmark (cargo bench -p agentpool-server
// --bench scale -- queue). Two modes:
//   node graphile.mjs prefill URL N     install the schema, add N no-op jobs in one statement
//   node graphile.mjs work URL CONCURRENCY
//       run a worker in graphile-worker's documented fast configuration (local queue 500,
//       batched completion with no delay); print "n COUNT" as jobs finish (at most every
//       50 ms) and, when stdin closes, "done {handled, first, last}" with the wall-clock
//       times (ms) of the first job start and the last job end.
import { makeWorkerUtils, run } from "graphile-worker";

const [mode, url, arg] = process.argv.slice(2);
const clock = () => performance.timeOrigin + performance.now();

if (mode === "prefill") {
  const utils = await makeWorkerUtils({ connectionString: url });
  await utils.migrate();
  await utils.withPgClient((c) =>
    c.query(
      "SELECT graphile_worker.add_jobs(array(SELECT json_populate_record(null::graphile_worker.job_spec, " +
        "json_build_object('identifier', 'noop', 'payload', '{}'::json)) FROM generate_series(1, $1)))",
      [Number(arg)],
    ),
  );
  await utils.release();
  console.log("prefilled");
} else if (mode === "work") {
  let handled = 0;
  let first = 0;
  let last = 0;
  let reported = 0;
  const runner = await run({
    connectionString: url,
    concurrency: Number(arg),
    noHandleSignals: true,
    preset: {
      worker: {
        localQueue: { size: 500 },
        completeJobBatchDelay: 0,
        failJobBatchDelay: 0,
      },
    },
    taskList: {
      noop: async () => {
        const t = clock();
        if (first === 0) first = t;
        handled += 1;
        last = clock();
      },
    },
  });
  const timer = setInterval(() => {
    if (handled !== reported) {
      reported = handled;
      console.log(`n ${handled}`);
    }
  }, 50);
  console.log("ready");
  process.stdin.resume();
  process.stdin.on("end", async () => {
    clearInterval(timer);
    await runner.stop();
    console.log(`done ${JSON.stringify({ handled, first, last })}`);
    process.exit(0);
  });
} else {
  console.error("usage: graphile.mjs prefill URL N | work URL CONCURRENCY");
  process.exit(2);
}
