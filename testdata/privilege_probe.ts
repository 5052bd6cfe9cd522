/**
 * Run by hardening_test.ts with exactly the flags of `deno task run`: starts the real server in this process,
 * then tries what the server must not be able to do, and reports each outcome as one JSON line on stderr
 * (stdout is the server's log). Then it stops the server with SIGTERM, through the normal shutdown.
 */

import { serve } from "../main.ts";

function attempt(action: () => unknown): string {
  try {
    action();
    return "allowed";
  } catch (error) {
    return error instanceof Error ? error.name : String(error);
  }
}

serve();
const outcome = {
  read_etc_passwd: attempt(() => Deno.readTextFileSync("/etc/passwd")),
  read_own_source: attempt(() => Deno.readTextFileSync(new URL("../main.ts", import.meta.url))),
  write_tmp: attempt(() => Deno.writeTextFileSync("/tmp/shipshape-probe", "x")),
  run_subprocess: attempt(() => new Deno.Command("true").outputSync()),
  env_home: attempt(() => Deno.env.get("HOME")),
  env_all: attempt(() => Deno.env.toObject()),
  ffi: attempt(() => Deno.dlopen("libc.so.6", {})),
  sys_os_uptime: attempt(() => Deno.osUptime()),
  net_other_host: Deno.permissions.querySync({ name: "net", host: "example.com:443" }).state,
  // What it must be able to do:
  env_port: attempt(() => Deno.env.get("PORT")),
  hostname: attempt(() => Deno.hostname()),
  net_loopback: Deno.permissions.querySync({ name: "net", host: "127.0.0.1:8080" }).state,
};
console.error(JSON.stringify(outcome));
Deno.kill(Deno.pid, "SIGTERM");
