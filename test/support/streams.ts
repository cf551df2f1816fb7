/** Yields each complete line of a streamed fetch body as soon as it arrives. */
export async function* readLines(response: Response): AsyncGenerator<string, void, undefined> {
  if (response.body === null) return;
  const decoder = new TextDecoder();
  let pending = '';
  for await (const chunk of response.body) {
    pending += decoder.decode(chunk, { stream: true });
    let newline = pending.indexOf('\n');
    while (newline >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      if (line.trim() !== '') yield line;
      newline = pending.indexOf('\n');
    }
  }
  if (pending.trim() !== '') yield pending;
}

/** Yields the payload of each `data: ` line of a server-sent event stream. */
export async function* readSseEvents(response: Response): AsyncGenerator<string, void, undefined> {
  for await (const line of readLines(response)) {
    if (line.startsWith('data: ')) yield line.slice(6);
  }
}

/** An SSE stream's events as [event name, parsed data], for APIs that name their events (Messages, Responses). */
export async function namedSseEvents(response: Response): Promise<Array<[string, Record<string, unknown>]>> {
  const events: Array<[string, Record<string, unknown>]> = [];
  let name = '';
  for await (const line of readLines(response)) {
    if (line.startsWith('event: ')) name = line.slice(7);
    else if (line.startsWith('data: ')) events.push([name, JSON.parse(line.slice(6)) as Record<string, unknown>]);
  }
  return events;
}
