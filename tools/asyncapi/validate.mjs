// Validates AsyncAPI documents as `asyncapi validate` (@asyncapi/cli) does: the CLI's
// validate command runs this parser's `validate` with its default ruleset. The parser alone
// installs in ~30 s (55 MB); the whole CLI took ~3 min (450 MB) here, for the same verdict.
// Usage: node validate.mjs FILE...; exits 1 if any document has an error.
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { DiagnosticSeverity, Parser } from "@asyncapi/parser";

const parser = new Parser();
let invalid = 0;
for (const file of process.argv.slice(2)) {
  // With its own path as the source, the document's relative $refs (./schemas/…) resolve.
  const source = resolve(file);
  const diagnostics = await parser.validate(await readFile(source, "utf8"), { source });
  let errors = 0;
  for (const d of diagnostics) {
    const at = d.range ? `${d.range.start.line + 1}:${d.range.start.character + 1}` : "-";
    const severity = DiagnosticSeverity[d.severity];
    console.log(`${file}:${at} ${severity} ${d.code}: ${d.message} (${d.path.join(".")})`);
    if (d.severity === DiagnosticSeverity.Error) errors += 1;
  }
  console.log(`${file}: ${errors === 0 ? "valid" : `invalid, ${errors} errors`}`);
  invalid += errors === 0 ? 0 : 1;
}
process.exit(invalid === 0 ? 0 : 1);
