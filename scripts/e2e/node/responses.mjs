// The Responses API through the official openai-node SDK (pinned in
// package.json). scripts/e2e/test_openai_node.py runs it against a
// coordinator and asserts on what it prints: one JSON object, one key per
// scenario, each either the values the scenario saw or {"error": ...}.
//
//   GPTOSS_BASE_URL=http://127.0.0.1:8000/v1 node scripts/e2e/node/responses.mjs
import OpenAI from 'openai';

const baseURL = process.env.GPTOSS_BASE_URL;
if (!baseURL) {
  console.error('GPTOSS_BASE_URL is not set (e.g. http://127.0.0.1:8000/v1)');
  process.exit(2);
}
const model = process.env.GPTOSS_MODEL || 'gpt-oss-20b';
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });

const weatherTool = {
  type: 'function',
  name: 'get_weather',
  description: 'Get the current weather for a city.',
  parameters: {
    type: 'object',
    properties: { city: { type: 'string' } },
    required: ['city'],
    additionalProperties: false,
  },
  strict: true,
};

const kinds = (r) => r.output.map((item) => item.type);

async function create() {
  const r = await client.responses.create({
    model,
    input: 'What is the capital of France?',
    instructions: 'Answer briefly.',
    max_output_tokens: 2000,
    metadata: { client: 'node' },
  });
  return {
    id: r.id, object: r.object, status: r.status, model: r.model, kinds: kinds(r),
    output_text: r.output_text, message_text: r.output.find((i) => i.type === 'message')?.content[0]?.text,
    reasoning_text: r.output.find((i) => i.type === 'reasoning')?.content?.[0]?.text,
    usage: r.usage, metadata: r.metadata, instructions: r.instructions,
    retrieved_equal: JSON.stringify(await client.responses.retrieve(r.id)) === JSON.stringify(r),
  };
}

// stream: true, consumed with for await.
async function streamEvents() {
  const stream = await client.responses.create({
    model, input: 'Count from one to ten', max_output_tokens: 2000, stream: true,
  });
  const types = [];
  const sequence = [];
  let text = '';
  let reasoning = '';
  let final = null;
  for await (const event of stream) {
    types.push(event.type);
    sequence.push(event.sequence_number);
    if (event.type === 'response.output_text.delta') text += event.delta;
    if (event.type === 'response.reasoning_text.delta') reasoning += event.delta;
    if (event.type === 'response.completed') final = event.response;
  }
  const got = await client.responses.retrieve(final.id);
  const finalMessage = final.output.find((i) => i.type === 'message');
  return {
    types, sequence, text, reasoning,
    final_id: final.id, final_status: final.status, final_kinds: kinds(final),
    final_text: finalMessage?.content[0]?.text,
    final_reasoning: final.output.find((i) => i.type === 'reasoning')?.content?.[0]?.text,
    retrieved_kinds: kinds(got), retrieved_text: got.output_text,
  };
}

// client.responses.stream(...): the accumulating helper, events by name
// and finalResponse().
async function streamHelper() {
  const stream = client.responses.stream({ model, input: 'Say something about latency', max_output_tokens: 2000 });
  const deltas = [];
  const snapshots = [];
  stream.on('response.output_text.delta', (event) => {
    deltas.push(event.delta);
    snapshots.push(event.snapshot);
  });
  const final = await stream.finalResponse();
  return {
    deltas, last_snapshot: snapshots.at(-1) ?? null, status: final.status, kinds: kinds(final),
    output_text: final.output_text, id: final.id,
  };
}

// A streamed function call through the helper: argument deltas with
// snapshots, and the final item.
async function streamToolCall() {
  const stream = client.responses.stream({ model, input: 'Weather in Rome?', tools: [weatherTool] });
  const deltas = [];
  const snapshots = [];
  stream.on('response.function_call_arguments.delta', (event) => {
    deltas.push(event.delta);
    snapshots.push(event.snapshot);
  });
  const final = await stream.finalResponse();
  const call = final.output.find((i) => i.type === 'function_call');
  return {
    deltas, last_snapshot: snapshots.at(-1) ?? null, kinds: kinds(final),
    arguments: call?.arguments ?? null, parsed_arguments: call?.parsed_arguments ?? null,
  };
}

// A function call, answered with function_call_output and previous_response_id.
async function toolRoundTrip() {
  const r1 = await client.responses.create({ model, input: "What's the weather in Paris?", tools: [weatherTool] });
  const call = r1.output.find((i) => i.type === 'function_call');
  const result = JSON.stringify({ city: 'Paris', temperature_c: 21 });
  const r2 = await client.responses.create({
    model, previous_response_id: r1.id, tools: [weatherTool],
    input: [{ type: 'function_call_output', call_id: call.call_id, output: result }],
  });
  return {
    first_kinds: kinds(r1), first_status: r1.status,
    call: { id: call.id, call_id: call.call_id, name: call.name, arguments: call.arguments, status: call.status },
    result,
    second_kinds: kinds(r2), second_status: r2.status, previous_response_id: r2.previous_response_id,
    first_id: r1.id, output_text: r2.output_text,
  };
}

// Stored state through the SDK: input items (auto-paginated), delete, 404.
async function stored() {
  const r = await client.responses.create({
    model, max_output_tokens: 2000,
    input: [{ role: 'user', content: 'one' }, { role: 'assistant', content: 'two' }, { role: 'user', content: 'three' }],
  });
  const items = [];
  for await (const item of client.responses.inputItems.list(r.id, { order: 'asc', limit: 1 })) {
    items.push({ id: item.id, type: item.type, role: item.role, text: item.content?.[0]?.text });
  }
  await client.responses.delete(r.id);
  let status = null;
  let errorClass = null;
  try {
    await client.responses.retrieve(r.id);
  } catch (e) {
    status = e.status;
    errorClass = e.constructor.name;
  }
  return { items, after_delete_status: status, after_delete_error: errorClass };
}

const scenarios = { create, streamEvents, streamHelper, streamToolCall, toolRoundTrip, stored };
const only = process.argv.slice(2);
const out = {};
for (const [name, fn] of Object.entries(scenarios)) {
  if (only.length && !only.includes(name)) continue;
  try {
    out[name] = await fn();
  } catch (e) {
    out[name] = { error: String(e?.stack || e), status: e?.status ?? null };
  }
}
console.log(JSON.stringify(out));
