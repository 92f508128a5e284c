// node phatjs_times.cjs RUNS REQUEST FILE...: for each FILE, RUNS wall-clock times (ms) of one
// run in Phala's phatjs (@phala/fn 0.2.22, scripts/phala-fn), made as `phat-fn run
// --experimentalAsync` makes it (init(), run(["phatjs", "-c", code, "--", REQUEST])), all in this
// one process after a warm-up run each: a fresh phatjs runtime per run, the WebAssembly module
// compiled once. Prints {"times": {"FILE": [ms, ...], ...}, "outputs": {"FILE": last output}}.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const { init, run } = require(path.join(__dirname, "..", "scripts", "phala-fn", "node_modules",
  "@phala", "fn", "dist", "lib", "phatjs", "phatjs.js"));

(async () => {
  const [runs, request, ...files] = process.argv.slice(2);
  const times = {}, outputs = {};
  init();
  for (const file of files) {
    const code = fs.readFileSync(file, "utf8");
    await run(["phatjs", "-c", code, "--", request]);
    times[file] = [];
    for (let i = 0; i < Number(runs); i += 1) {
      const started = performance.now();
      outputs[file] = await run(["phatjs", "-c", code, "--", request]);
      times[file].push(performance.now() - started);
    }
  }
  console.log(JSON.stringify({ times, outputs }));
})();
