// Finds or builds the Ollama binary for the integration tests and prints its path on the last line.
// Exit 0 with a path; exit 1 with the reason when there is none.
import { buildOllama, findOllama } from './ollama-binary.js';

let lookup = findOllama();
if ('missing' in lookup && process.env.OLLAMA_BIN === undefined) {
  lookup = await buildOllama((line) => process.stderr.write(`[ollama build] ${line}\n`));
}
if ('found' in lookup) {
  process.stdout.write(`${lookup.found}\n`);
} else {
  process.stderr.write(`${lookup.missing}\n`);
  process.exitCode = 1;
}
