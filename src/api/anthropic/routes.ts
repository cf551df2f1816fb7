import express, { type Router as ExpressRouter } from 'express';
import type { HeaderBag } from '../../routing/signals.js';
import type { RouteInput } from '../../routing/router.js';
import { prepareChat } from '../chat-plan.js';
import type { ApiContext } from '../context.js';
import { sendError } from '../errors.js';
import { routeAndServe, type PlanForRoute } from '../generation.js';
import { InvalidRequest } from '../openai/chat.js';
import { parseBody } from '../validate.js';
import { anthropicFormat, anthropicThink, countTokensSchema, estimateInputTokens, messagesRequestSchema, toOllamaChat, type MessagesRequest } from './messages.js';

/** The routing input and plan of one Messages request. Throws InvalidRequest. */
export function prepareMessages(context: Pick<ApiContext, 'catalog'>, request: MessagesRequest, headers: HeaderBag): { input: RouteInput; plan: PlanForRoute } {
  const { body, notes } = toOllamaChat(request);
  const format = anthropicFormat(request.model, {
    showThinking: request.thinking?.display !== 'omitted',
    parallelToolCalls: request.tool_choice?.disable_parallel_tool_use !== true,
  });
  return prepareChat(context.catalog, { requestedModel: request.model, body, notes, think: anthropicThink(request), surface: 'anthropic', stream: request.stream === true, format }, headers);
}

/** Anthropic's Messages API: POST /v1/messages (Claude Code adds ?beta=true) and /v1/messages/count_tokens. */
export function anthropicRoutes(context: ApiContext): ExpressRouter {
  const router = express.Router();

  router.post('/v1/messages', async (req, res) => {
    const request = parseBody(messagesRequestSchema, req, res, 'anthropic');
    if (request === undefined) return;
    let prepared;
    try {
      prepared = prepareMessages(context, request, req.headers);
    } catch (error) {
      if (!(error instanceof InvalidRequest)) throw error;
      sendError(res, 'anthropic', 400, error.message);
      return;
    }
    await routeAndServe(context.router, context.policy, req, res, prepared.input, prepared.plan);
  });

  // An estimate (characters / 4): Ollama has no endpoint that counts a chat's tokens without running it.
  router.post('/v1/messages/count_tokens', (req, res) => {
    const request = parseBody(countTokensSchema, req, res, 'anthropic');
    if (request === undefined) return;
    try {
      res.json({ input_tokens: estimateInputTokens(request) });
    } catch (error) {
      if (!(error instanceof InvalidRequest)) throw error;
      sendError(res, 'anthropic', 400, error.message);
    }
  });

  return router;
}
