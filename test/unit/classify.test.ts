import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Classifier, type RequestSignals } from '../../src/routing/classify.js';
import { loadConfig } from '../../src/config/load.js';
import { clientSignals } from '../../src/routing/signals.js';

const classification = loadConfig({ file: 'config.example.yaml' }).routing.classification;
const classifier = new Classifier({ ...classification, complex_keywords: [...classification.complex_keywords, 'c++'] });

const chat = (userText: string, extra: Partial<RequestSignals> = {}): RequestSignals => ({
  kind: 'chat',
  userText,
  systemText: '',
  turns: 1,
  approxTokens: Math.round(userText.length / 4),
  tools: false,
  client: clientSignals({}),
  images: false,
  ...extra,
});

describe('classifier', () => {
  it('matches the config’s keywords as whole words, in any case, highest tier first', () => {
    assert.deepEqual(classifier.classify(chat('Please FORMAT this file')), { tier: 'simple', reason: "simple: keyword 'format'" });
    assert.deepEqual(classifier.classify(chat('can you explain this?')), { tier: 'moderate', reason: "moderate: keyword 'explain'" });
    assert.deepEqual(classifier.classify(chat('format it, then architect the module')), { tier: 'complex', reason: "complex: keyword 'architect'" });
    // "designer" is not the word "design"; "reformat" is not "format".
    assert.equal(classifier.classify(chat('ask the designer to reformat')).reason, 'moderate: no keyword');
    assert.equal(classifier.classify(chat('port this to C++ please')).tier, 'complex');
  });

  it('ignores a keyword list of only blank words instead of matching every request', () => {
    const blank = new Classifier({ ...classification, complex_keywords: [' '] });
    assert.deepEqual(blank.classify(chat('hi')), { tier: 'moderate', reason: 'moderate: no keyword' });
  });

  it('reads the latest user turn and the system prompt', () => {
    assert.equal(classifier.classify(chat('hello', { systemText: 'You help people design systems.' })).reason, "complex: keyword 'design'");
  });

  it('lets a keyword of the user’s own turn decide over one in the system prompt, which a client sends the same with every request', () => {
    const copilotLike = 'You are an expert AI programming assistant. Implement what the user asks.';
    assert.deepEqual(classifier.classify(chat('please format this file', { systemText: copilotLike })), { tier: 'simple', reason: "simple: keyword 'format'" });
    assert.equal(classifier.classify(chat('hello', { systemText: copilotLike })).reason, "complex: keyword 'implement'");
  });

  it('puts fill-in-the-middle on the simple tier whatever the words', () => {
    assert.deepEqual(classifier.classify({ ...chat('architect'), kind: 'fim' }), { tier: 'simple', reason: 'simple: fill-in-the-middle completion' });
  });

  it('raises the tier for tools, long context and many turns', () => {
    assert.deepEqual(classifier.classify(chat('format this', { tools: true })), { tier: 'complex', reason: "complex: keyword 'format'; tools present" });
    assert.deepEqual(classifier.classify(chat('format this', { approxTokens: 9000 })), {
      tier: 'complex',
      reason: "complex: keyword 'format'; long context (~9000 tokens)",
    });
    assert.deepEqual(classifier.classify(chat('format this', { turns: 12 })), { tier: 'moderate', reason: "moderate: keyword 'format'; 12 turns" });
  });

  it('takes both thresholds as "from": long_context_tokens tokens are long, many_turns turns are many', () => {
    const { long_context_tokens: long, many_turns: many } = classification;
    assert.equal(classifier.classify(chat('format this', { approxTokens: long })).tier, 'complex');
    assert.equal(classifier.classify(chat('format this', { approxTokens: long - 1 })).tier, 'simple');
    assert.equal(classifier.classify(chat('format this', { turns: many })).tier, 'moderate');
    assert.equal(classifier.classify(chat('format this', { turns: many - 1 })).tier, 'simple');
  });

  it('uses the default tier for a chat and simple for a plain completion without keywords', () => {
    assert.equal(classifier.classify(chat('hi')).tier, 'moderate');
    assert.deepEqual(classifier.classify({ ...chat('x = 1'), kind: 'completion' }), { tier: 'simple', reason: 'simple: plain completion' });
  });
});
