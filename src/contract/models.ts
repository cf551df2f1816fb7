/**
 * A model's name as Ollama compares names: letter case aside (it finds "Llama3.2" for a model
 * pulled as "llama3.2"), and "llama3" is "llama3:latest"; a namespace ("user/llama3") keeps its own
 * tag rule. A key to compare and look up by, not a name to show.
 */
export function canonicalModelName(name: string): string {
  const lastSegment = name.slice(name.lastIndexOf('/') + 1);
  return (lastSegment.includes(':') ? name : `${name}:latest`).toLowerCase();
}

export function sameModel(a: string, b: string): boolean {
  return canonicalModelName(a) === canonicalModelName(b);
}
