import type { Router as ExpressRouter } from 'express';
import { mountRoutes, type ApiHandler, type ApiRoute } from '../call.js';
import { serveChat, type TranslatedChat } from '../chat-plan.js';
import type { ApiContext } from '../context.js';
import { parseBody } from '../validate.js';
import {
  anthropicFormat,
  anthropicThink,
  checkAcrossFields,
  countTokensSchema,
  estimateInputTokens,
  messagesRequestSchema,
  toOllamaChat,
  type MessagesRequest,
} from './messages.js';

/** A Messages request as the bridge's chat: a plain function of the parsed body. Throws InvalidRequest. */
export function translateMessages(request: MessagesRequest): TranslatedChat {
  const think = anthropicThink(request);
  return {
    requestedModel: request.model,
    ...toOllamaChat(request),
    think,
    stream: request.stream === true,
    format: anthropicFormat(request.model, {
      // Thinking blocks only when the request turned thinking on, as Anthropic answers: a model that
      // thinks by itself must not put a block before the text a plain client reads as content[0].
      showThinking: think !== undefined && think !== false && request.thinking?.display !== 'omitted',
      parallelToolCalls: request.tool_choice?.disable_parallel_tool_use !== true,
    }),
  };
}

/** The Messages API's generation route, which Claude Code calls for every turn. */
export function anthropicHotRoutes(context: ApiContext): ApiRoute[] {
  const messages: ApiHandler = async (req, res) => {
    const request = parseBody(messagesRequestSchema, req);
    checkAcrossFields(request, req.headers['anthropic-beta']);
    await serveChat(context, req, res, () => translateMessages(request));
  };
  return [{ method: 'POST', path: '/v1/messages', handler: messages }];
}

/** Anthropic's Messages API: POST /v1/messages (Claude Code adds ?beta=true) and /v1/messages/count_tokens; mounted on `router`. */
export function anthropicRoutes(context: ApiContext, router: ExpressRouter): ExpressRouter {
  mountRoutes(router, anthropicHotRoutes(context));

  // An estimate (characters / 4): Ollama has no endpoint that counts a chat's tokens without running it.
  router.post('/v1/messages/count_tokens', (req, res) => {
    const request = parseBody(countTokensSchema, req);
    res.json({ input_tokens: estimateInputTokens(request) });
  });

  return router;
}
