// Builds the UI into dist/ (committed, served by the API process; Node is needed only to build and test):
//   node build.mjs                 dist/app-<hash>.js, dist/app-<hash>.css, dist/manifest.json, dist/LICENSES.txt
//   node build.mjs --outdir DIR    the same into DIR (CI builds into a temporary folder and compares)
//   node build.mjs --tests         the unit tests into .test-build/, for `node --test`
// esbuild's output depends only on the sources and its version (pinned in package-lock.json), so a
// rebuild is byte for byte the committed one.
import { build } from "esbuild";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";

const args = process.argv.slice(2);
const here = new URL(".", import.meta.url).pathname;

if (args.includes("--tests")) {
  const outdir = join(here, ".test-build");
  rmSync(outdir, { recursive: true, force: true });
  const tests = readdirSync(join(here, "test")).filter((f) => f.endsWith(".test.ts"));
  await build({
    entryPoints: tests.map((f) => join(here, "test", f)),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outdir,
    outExtension: { ".js": ".mjs" },
    jsx: "automatic",
    jsxImportSource: "preact",
    logLevel: "warning",
  });
  process.exit(0);
}

const at = args.indexOf("--outdir");
const outdir = at >= 0 ? args[at + 1] : join(here, "dist");
rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });

const result = await build({
  entryPoints: { app: join(here, "src/main.tsx"), style: join(here, "src/styles.css") },
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome111", "firefox114", "safari16.4"],
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir,
  entryNames: "[name]-[hash]",
  legalComments: "none", // the licences go to LICENSES.txt below
  metafile: true,
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p));
const manifest = {
  js: outputs.find((f) => f.startsWith("app-") && f.endsWith(".js")),
  css: outputs.find((f) => f.startsWith("style-") && f.endsWith(".css")),
};
writeFileSync(join(outdir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");

// What the bundle contains of other people's code, with their licences.
const bundled = ["preact"];
const notices = bundled.map((name) => {
  const pkg = JSON.parse(readFileSync(join(here, "node_modules", name, "package.json"), "utf8"));
  const licence = readFileSync(join(here, "node_modules", name, "LICENSE"), "utf8");
  return `${name} ${pkg.version} (${pkg.license})\n\n${licence.trim()}\n`;
});
writeFileSync(join(outdir, "LICENSES.txt"), notices.join("\n---\n\n"));
