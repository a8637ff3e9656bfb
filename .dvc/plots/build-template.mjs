// Writes .dvc/plots/template.html (the page `dvc plots show` fills) from template.src.html,
// inlining each <script data-npm="PACKAGE/FILE"></script> with that file from node_modules.
// Run by `npm ci` / `npm install` (package.json postinstall); the output is not committed.
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "..", "..", "node_modules");
const source = readFileSync(join(here, "template.src.html"), "utf8");
const placeholders = /\{(scripts|plot_divs|refresh_tag)\}/;

const page = source.replace(/<script data-npm="([^"]+)"><\/script>/g, (_, file) => {
  const code = readFileSync(join(modules, file), "utf8");
  // The code goes inside <script>...</script> and through DVC's str.replace of placeholders.
  if (code.includes("</script") || placeholders.test(code)) {
    throw new Error(`${file}: cannot be inlined (holds "</script" or a DVC placeholder)`);
  }
  const pkg = join(modules, file.split("/")[0], "package.json");
  const version = JSON.parse(readFileSync(pkg, "utf8")).version;
  return `<script>/* ${file} ${version} (npm) */\n${code}\n</script>`;
});
if (/<script data-npm=/.test(page)) {
  throw new Error("template.src.html: a data-npm script tag was not inlined");
}
const out = join(here, "template.html");
writeFileSync(`${out}.tmp`, page);
renameSync(`${out}.tmp`, out); // never a half-written template
console.log(`wrote ${out} (${page.length} bytes)`);
