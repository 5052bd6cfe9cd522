/**
 * The docs against the code, so they cannot drift: the tasks they name exist, the README's settings table is
 * config.ts's table, their relative links resolve, and the tests they cite as proof exist.
 */

import { deepStrictEqual, equal, ok } from "node:assert/strict";
import deno from "./deno.json" with { type: "json" };
import { SETTINGS, VARIABLES } from "./config.ts";

const ROOT = new URL(".", import.meta.url).pathname;

/** The README and every file in docs/, as [path relative to the root, text]. */
function documents(): [string, string][] {
  const docs = [...Deno.readDirSync(`${ROOT}docs`)].filter((e) => e.isFile && e.name.endsWith(".md"))
    .map((e) => `docs/${e.name}`).sort();
  return ["README.md", ...docs].map((path) => [path, Deno.readTextFileSync(`${ROOT}${path}`)]);
}

/** The rows of the first table after `heading` in `markdown`, as trimmed cells. */
function tableAfter(markdown: string, heading: string): string[][] {
  const start = markdown.indexOf(`\n${heading}\n`);
  ok(start >= 0, `no "${heading}" heading`);
  const lines = markdown.slice(start).split("\n").slice(2);
  const first = lines.findIndex((l) => l.startsWith("|"));
  const rows: string[][] = [];
  for (const line of lines.slice(first + 2)) { // past the header and its |---| line
    if (!line.startsWith("|")) break;
    rows.push(line.slice(1, -1).split("|").map((cell) => cell.trim()));
  }
  return rows;
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading.toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, "").replace(/ /g, "-");
}

/** The anchors of every heading in a markdown text. */
function anchors(markdown: string): Set<string> {
  return new Set([...markdown.matchAll(/^#{1,6} (.+)$/gm)].map((m) => slug(m[1])));
}

/** Test and step names declared in a test file; a `${...}` in a template literal name matches anything. */
function testNames(file: string): RegExp[] {
  const source = Deno.readTextFileSync(`${ROOT}${file}`);
  const names = [...source.matchAll(/(?:Deno\.test|\.step)\(\s*(["'`])((?:\\.|(?!\1)[^\\])*)\1/g)];
  return names.map((m) => {
    const literal = m[2].replace(/\\(.)/g, "$1").split(/\$\{[^}]*\}/);
    return new RegExp(`^${literal.map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join(".+")}$`);
  });
}

/**
 * Every test name a document cites: a quoted string right after a `file_test.ts` mention (at most a short aside
 * between them), and the quoted strings chained after it (separated by commas, "and", "steps", parentheses: anything
 * but a quote or a sentence end).
 */
function citations(markdown: string): { file: string; name: string }[] {
  const found: { file: string; name: string }[] = [];
  for (const paragraph of markdown.split(/\n\s*\n/)) {
    const text = paragraph.replace(/\s+/g, " ");
    const token = /`([\w./-]*_test\.ts)`|"([^"]+)"/g;
    let file = "";
    let first = false;
    let end = 0;
    for (const m of text.matchAll(token)) {
      const between = text.slice(end, m.index);
      if (m[1]) {
        file = m[1];
        first = true;
      } else if (
        file && (first ? /^[^`"]{0,60}$/.test(between) : !/[.!?] [A-Z]|"/.test(between) && between.length <= 300)
      ) {
        found.push({ file, name: m[2] });
        first = false;
      } else {
        file = "";
      }
      end = m.index + m[0].length;
    }
  }
  return found;
}

Deno.test("every `deno task` the README and docs/ name is a task in deno.json", () => {
  const tasks = Object.keys(deno.tasks);
  let named = 0;
  for (const [path, text] of documents()) {
    for (const m of text.matchAll(/deno task ([a-z][\w:-]*)/g)) {
      named++;
      ok(tasks.includes(m[1]), `${path} names "deno task ${m[1]}", which deno.json does not have (it has ${tasks})`);
    }
  }
  ok(named > 10, `found only ${named} task names: the pattern is wrong`);
});

Deno.test("the README's settings table is config.ts's: the same variables, defaults and descriptions", () => {
  const readme = Deno.readTextFileSync(`${ROOT}README.md`);
  const rows = tableAfter(readme, "## Settings");
  const listed = rows.map(([variable]) => variable.replace(/`/g, ""));
  deepStrictEqual([...listed].sort(), [...VARIABLES].sort(), "the variables config.ts reads, no more, no fewer");
  for (const [variable, value, meaning] of rows) {
    const setting = SETTINGS[variable.replace(/`/g, "") as keyof typeof SETTINGS];
    equal(value, `\`${setting.default}\``, `${variable}: the default in config.ts`);
    equal(meaning, setting.description, `${variable}: the description in config.ts`);
  }
});

Deno.test("every relative link in the README and docs/ resolves, #anchors included", () => {
  let links = 0;
  for (const [path, text] of documents()) {
    const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/") + 1) : "";
    for (const m of text.matchAll(/!?\[[^\]]*\]\(([^)\s]+)\)/g)) {
      const target = m[1];
      if (/^[a-z]+:/.test(target)) continue; // http:, https:, mailto:
      links++;
      const [file, anchor] = target.split("#");
      const resolved = file ? new URL(file, `file://${ROOT}${dir}`).pathname : `${ROOT}${path}`;
      let body = "";
      try {
        body = Deno.statSync(resolved).isFile ? Deno.readTextFileSync(resolved) : "";
      } catch {
        throw new Error(`${path} links to ${target}: no such file`);
      }
      if (anchor) ok(anchors(body).has(anchor), `${path} links to ${target}: no heading with that anchor`);
    }
  }
  ok(links > 10, `found only ${links} links: the pattern is wrong`);
});

Deno.test("every test the docs cite as proof exists in the file they name", () => {
  const declared = new Map<string, RegExp[]>();
  const missing: string[] = [];
  let cited = 0;
  for (const [path, text] of documents()) {
    for (const { file, name } of citations(text)) {
      if (!declared.has(file)) {
        try {
          declared.set(file, testNames(file));
        } catch {
          throw new Error(`${path} cites ${file}, which does not exist`);
        }
      }
      cited++;
      if (!declared.get(file)!.some((re) => re.test(name))) missing.push(`${path}: "${name}" in ${file}`);
    }
  }
  deepStrictEqual(missing, [], "cited tests that do not exist");
  ok(cited > 50, `found only ${cited} cited tests: the pattern is wrong`);
});

Deno.test("the README is a front page: at most 150 lines and under 12 KB, the rest in docs/", () => {
  const readme = Deno.readTextFileSync(`${ROOT}README.md`);
  ok(readme.split("\n").length <= 150, `${readme.split("\n").length} lines`);
  const bytes = new TextEncoder().encode(readme).length;
  ok(bytes < 12_000, `${bytes} bytes`);
});

Deno.test("slug() and citations() read markdown as GitHub and the docs do", () => {
  equal(
    slug("Containers on these Debian machines (podman quirks)"),
    "containers-on-these-debian-machines-podman-quirks",
  );
  equal(slug("`deno task dev` and X-Request-Id"), "deno-task-dev-and-x-request-id");
  deepStrictEqual(citations('Proved by `a_test.ts`: "one", "two" and "three". Then "not a test".'), [
    { file: "a_test.ts", name: "one" },
    { file: "a_test.ts", name: "two" },
    { file: "a_test.ts", name: "three" },
  ]);
  deepStrictEqual(citations('logs "shutdown complete" before `b_test.ts` "x"'), [{ file: "b_test.ts", name: "x" }]);
  deepStrictEqual(citations('`c_test.ts`: `deno task run` prints no "Download" line'), []);
});
