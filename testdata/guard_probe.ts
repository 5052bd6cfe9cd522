/**
 * Run by hardening_test.ts: installs the server's process guards, then throws outside any request (an
 * unhandled rejection, an uncaught exception in a timer) and checks the process is still alive afterwards.
 */

import { guardProcess } from "../main.ts";
import { Logger } from "../logging.ts";

guardProcess(new Logger({ writer: Deno.stdout })); // synchronous writes: the probe checks the guard, not the writer
Promise.reject(new TypeError("nobody awaited this"));
setTimeout(() => {
  throw new RangeError("thrown in a timer");
}, 10);
setTimeout(() => console.log(JSON.stringify({ msg: "still alive" })), 200);
