// Bundle every widget entry js/widgets/<name>.js (with the CSS it imports) into xai_widgets/static/<name>.js
// and <name>.css: one ES module and one stylesheet per widget, for anywidget's _esm and _css.
// `node build.mjs` builds once; `node build.mjs --watch` rebuilds on every change (with ANYWIDGET_HMR=1 the
// kernel then pushes the new files to open views).
import { existsSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, "..", "xai_widgets", "static");
const names = readdirSync(join(here, "widgets"))
  .filter((file) => file.endsWith(".js"))
  .map((file) => basename(file, ".js"))
  .sort();

// Every widget gets a stylesheet, so the Python class can always point _css at <name>.css.
const stylesheets = {
  name: "one-stylesheet-per-widget",
  setup(build) {
    build.onEnd((result) => {
      if (result.errors.length) return;
      for (const name of names) {
        const css = join(outdir, `${name}.css`);
        if (!existsSync(css)) writeFileSync(css, `/* ${name}: no styles */\n`);
      }
      console.log(`built ${names.length} widgets into ${outdir}: ${names.join(", ")}`);
    });
  },
};

const options = {
  entryPoints: Object.fromEntries(names.map((name) => [name, join(here, "widgets", `${name}.js`)])),
  outdir,
  bundle: true,
  format: "esm",
  target: "es2020",
  charset: "utf8",
  logLevel: "warning",
  plugins: [stylesheets],
};

rmSync(outdir, { recursive: true, force: true });
if (process.argv.includes("--watch")) {
  const context = await esbuild.context(options);
  await context.watch();
  console.log("watching js/ (Ctrl-C to stop)");
} else {
  await esbuild.build(options);
}
