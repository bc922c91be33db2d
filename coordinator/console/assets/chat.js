// The chat playground: streamed answers over /v1/chat/completions, the
// reasoning apart and collapsible, tool calls with their arguments, and
// per answer its token counts, time to first token and tokens/s.

import { APIError, post, readEvents } from './api.js';
import { el, num, seconds } from './format.js';

const EXAMPLE_TOOLS = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The current weather in a city.',
    parameters: {
      type: 'object',
      properties: {
        city: { type: 'string', description: 'The city, e.g. Paris' },
        unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
      },
      required: ['city'],
    },
  },
}];

// One assistant answer as it streams in.
class Answer {
  constructor(log) {
    this.log = log;
    this.root = el('article', 'msg assistant');
    this.root.setAttribute('aria-label', 'Answer');
    const who = el('p', 'who', 'gpt-oss');

    this.reasoning = el('details', 'reasoning');
    this.reasoning.open = true;
    this.reasoning.hidden = true;
    this.summary = el('summary', null, 'Reasoning');
    // A reader who opens or closes it decides from then on.
    this.summary.addEventListener('click', () => { this.userToggled = true; });
    this.reasoningText = document.createTextNode('');
    const rbody = el('div', 'reasoning-text');
    rbody.append(this.reasoningText);
    this.reasoning.append(this.summary, rbody);

    this.content = el('div', 'content');
    this.contentText = document.createTextNode('');
    this.content.append(this.contentText);
    this.tools = el('div', 'tool-calls');
    this.calls = [];
    this.meta = el('p', 'meta');
    this.root.append(who, this.reasoning, this.content, this.tools, this.meta);
    log.append(this.root);
    this.scroll(true);
  }

  scroll(force) {
    const log = this.log;
    if (force || log.scrollHeight - log.scrollTop - log.clientHeight < 120) log.scrollTop = log.scrollHeight;
  }

  addReasoning(text) {
    this.reasoning.hidden = false;
    this.reasoningText.appendData(text);
    this.scroll();
  }

  addContent(text) {
    // The answer has begun: fold the reasoning away, unless the reader chose.
    if (!this.contentText.length && !this.userToggled) this.reasoning.open = false;
    this.contentText.appendData(text);
    this.scroll();
  }

  // addToolCall merges one streamed tool-call delta (by its index).
  addToolCall(d) {
    const i = d.index ?? 0;
    let call = this.calls[i];
    if (!call) {
      const box = el('div', 'tool-call');
      const head = el('p', 'tool-head', 'Tool call ');
      const name = el('code', 'tool-name');
      head.append(name);
      const args = el('pre', 'tool-args');
      box.append(head, args);
      this.tools.append(box);
      call = this.calls[i] = { id: '', name: '', args: '', nameEl: name, argsEl: args };
    }
    if (d.id) call.id = d.id;
    if (d.function?.name) {
      call.name += d.function.name;
      call.nameEl.textContent = call.name;
    }
    if (d.function?.arguments) {
      call.args += d.function.arguments;
      call.argsEl.textContent = call.args;
    }
    this.scroll();
  }

  // finish pretty-prints the tool calls' arguments and writes the numbers.
  finish(meta, reasoningTokens) {
    for (const c of this.calls) {
      try {
        c.argsEl.textContent = JSON.stringify(JSON.parse(c.args), null, 2);
      } catch {
        // not JSON (cut short): leave it as it came
      }
    }
    if (reasoningTokens) this.summary.textContent = `Reasoning (${reasoningTokens} tokens)`;
    this.meta.textContent = meta;
    this.scroll();
  }

  fail(message) {
    const p = el('p', 'error', message);
    p.setAttribute('role', 'alert');
    this.root.append(p);
    this.scroll(true);
  }

  text() {
    return this.contentText.data;
  }
}

function parseTools(text) {
  if (!text.trim()) return null;
  const tools = JSON.parse(text);
  if (!Array.isArray(tools)) throw new Error('want a JSON array of tools');
  return tools;
}

// initChat wires the chat form. server() gives { model, profiles,
// profile } from /health; onUnauthorized is called on a 401.
export function initChat({ server, onUnauthorized }) {
  const $ = (id) => document.getElementById(id);
  const form = $('chat-form');
  const input = $('chat-input');
  const log = $('chat-log');
  const status = $('chat-status');
  const send = $('chat-send');
  const stop = $('chat-stop');
  const profile = $('chat-profile');
  const effort = $('chat-effort');
  const maxTokens = $('chat-max');
  const system = $('chat-system');
  const tools = $('chat-tools');
  const empty = $('chat-empty');

  let history = []; // earlier turns: user and assistant messages
  let running = null; // the AbortController of the answer streaming now

  const halt = () => running?.abort();
  stop.addEventListener('click', halt);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && running) halt();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  $('chat-new').addEventListener('click', () => {
    halt();
    history = [];
    log.replaceChildren(empty);
    status.textContent = 'New conversation.';
    input.focus();
  });
  $('chat-tools-example').addEventListener('click', () => {
    tools.value = JSON.stringify(EXAMPLE_TOOLS, null, 2);
    input.value ||= 'What is the weather in Paris?';
    input.focus();
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!running) ask();
  });

  async function ask() {
    const text = input.value.trim();
    if (!text) return;
    let toolList;
    try {
      toolList = parseTools(tools.value);
    } catch (err) {
      status.textContent = `The tools are not valid JSON: ${err.message}`;
      tools.closest('details').open = true;
      tools.focus();
      return;
    }
    const srv = server();
    const messages = [];
    if (system.value.trim()) messages.push({ role: 'system', content: system.value.trim() });
    messages.push(...history, { role: 'user', content: text });
    const body = {
      model: srv.model || 'gpt-oss-20b', messages, stream: true, stream_options: { include_usage: true },
    };
    // A server started with --enable-streaming=false answers whole.
    if (srv.streaming === false) {
      body.stream = false;
      delete body.stream_options;
    }
    if (profile.value) body.profile = profile.value;
    if (effort.value) body.reasoning_effort = effort.value;
    if (maxTokens.value) body.max_tokens = Number(maxTokens.value);
    if (toolList) body.tools = toolList;

    empty.remove();
    const user = el('article', 'msg user');
    user.setAttribute('aria-label', 'You');
    user.append(el('p', 'who', 'You'), el('div', 'content', text));
    log.append(user);
    input.value = '';
    const answer = new Answer(log);

    const ctrl = new AbortController();
    running = ctrl;
    send.disabled = true;
    stop.disabled = false;
    status.textContent = 'Waiting for the first token…';
    const t0 = performance.now();
    let tFirst = null;
    let tLast = null;
    let chunks = 0;
    let usage = null;
    let finish = null;
    let stopped = false;
    let failed = false;
    let unauthorized = false;
    // apply shows one choice's delta (or a whole message, which is the
    // delta from nothing).
    const apply = (d, finishReason) => {
      const reasoning = d.reasoning_content ?? d.reasoning;
      let got = false;
      if (reasoning) {
        answer.addReasoning(reasoning);
        got = true;
      }
      if (d.content) {
        answer.addContent(d.content);
        got = true;
      }
      (d.tool_calls || []).forEach((tc, i) => {
        answer.addToolCall({ index: i, ...tc });
        got = true;
      });
      if (finishReason) finish = finishReason;
      if (got) {
        tLast = performance.now();
        tFirst ??= tLast;
        if (++chunks === 1) status.textContent = 'Generating… (Stop or Escape ends it)';
      }
    };
    try {
      const resp = await post('/v1/chat/completions', body, ctrl.signal);
      if (!body.stream) {
        const r = await resp.json();
        usage = r.usage;
        for (const c of r.choices || []) apply(c.message || {}, c.finish_reason);
      } else {
        for await (const data of readEvents(resp)) {
          if (data === '[DONE]') break;
          const ev = JSON.parse(data);
          if (ev.error) {
            throw new APIError({ statusText: 'Error in the stream', message: ev.error.message || 'the answer failed.' });
          }
          if (ev.usage) usage = ev.usage;
          for (const c of ev.choices || []) apply(c.delta || {}, c.finish_reason);
        }
      }
    } catch (err) {
      if (err.name === 'AbortError') {
        stopped = true;
      } else {
        failed = true;
        const msg = err instanceof APIError ? err.describe() : `Error: ${err.message}`;
        answer.fail(msg);
        status.textContent = 'The request failed.';
        unauthorized = err.status === 401;
      }
    } finally {
      running = null;
      send.disabled = false;
      stop.disabled = true;
    }

    const out = usage?.completion_tokens ?? chunks;
    const parts = [];
    if (usage) parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} output tokens`);
    else if (chunks) parts.push(`≈${chunks} output tokens`);
    if (tFirst != null) parts.push(`TTFT ${seconds((tFirst - t0) / 1000)}`);
    if (out > 1 && tLast > tFirst) parts.push(`${num((out - 1) / ((tLast - tFirst) / 1000))} tokens/s`);
    if (stopped) parts.push('stopped');
    else if (finish) parts.push(`finish: ${finish}`);
    answer.finish(parts.join(' · '), usage?.completion_tokens_details?.reasoning_tokens);
    if (!failed) {
      status.textContent = stopped ? 'Stopped.' : 'Answer complete.';
      history.push({ role: 'user', content: text });
      if (answer.text()) history.push({ role: 'assistant', content: answer.text() });
      else history.pop(); // nothing to answer to: leave the turn out
    }
    if (unauthorized) onUnauthorized(); // which focuses the key
    else input.focus();
  }

  return {
    // setProfiles fills the profile choice (once, from /health).
    setProfiles(names, def) {
      if (profile.options.length) return;
      for (const n of names) {
        const o = el('option', null, n === def ? `${n} (default)` : n);
        o.value = n;
        o.selected = n === def;
        profile.append(o);
      }
    },
  };
}
