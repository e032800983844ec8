import { zodToJsonSchema } from 'zod-to-json-schema';
import type { ZodTypeAny } from 'zod';
import {
  CreateSessionRequest,
  ErrorBody,
  ExecuteRequest,
  ExecuteResult,
  FileListing,
  FileWritten,
  Session,
} from './schema.js';

function schema(type: ZodTypeAny): object {
  return zodToJsonSchema(type, { target: 'openApi3', $refStrategy: 'none' });
}

const json = (type: ZodTypeAny) => ({ content: { 'application/json': { schema: schema(type) } } });
const errors = {
  '400': { description: 'Invalid request', ...json(ErrorBody) },
  '401': { description: 'Missing or invalid API key', ...json(ErrorBody) },
  '404': { description: 'No such session for this key', ...json(ErrorBody) },
};
const sessionId = { name: 'id', in: 'path', required: true, schema: { type: 'string' } };
const guestPath = {
  name: 'path',
  in: 'query',
  required: true,
  description: 'An absolute path in the VM; ".." segments are rejected.',
  schema: { type: 'string' },
};

let cached: object | null = null;

/** The OpenAPI 3 document of the v1 API, generated from the same zod schema the server
 * validates with. */
export function openApiDocument(): object {
  cached ??= {
    openapi: '3.0.3',
    info: { title: 'hearth', version: '1' },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
    },
    security: [{ bearer: [] }],
    paths: {
      '/v1/sessions': {
        post: {
          summary: 'Create a session and boot its VM',
          requestBody: { required: true, ...json(CreateSessionRequest) },
          responses: { '201': { description: 'The session', ...json(Session) }, ...errors },
        },
        get: {
          summary: "List the caller's open sessions",
          responses: { '200': { description: 'Sessions' } },
        },
      },
      '/v1/sessions/{id}': {
        parameters: [sessionId],
        get: { summary: 'Get a session', responses: { '200': json(Session), ...errors } },
        delete: { summary: 'Close a session', responses: { '200': json(Session), ...errors } },
      },
      '/v1/sessions/{id}/execute': {
        parameters: [sessionId],
        post: {
          summary: 'Run code; with Accept: application/x-ndjson, stream output events',
          requestBody: { required: true, ...json(ExecuteRequest) },
          responses: { '200': { description: 'The result', ...json(ExecuteResult) }, ...errors },
        },
      },
      '/v1/sessions/{id}/files': {
        parameters: [sessionId, guestPath],
        put: {
          summary: 'Upload a file, streamed',
          requestBody: { content: { 'application/octet-stream': {} } },
          responses: {
            '201': { description: 'Written', ...json(FileWritten) },
            '413': { description: 'Over the upload limit', ...json(ErrorBody) },
            ...errors,
          },
        },
        get: {
          summary: 'Download a file, streamed',
          responses: {
            '200': { description: 'The bytes', content: { 'application/octet-stream': {} } },
            ...errors,
          },
        },
      },
      '/v1/sessions/{id}/files/list': {
        parameters: [sessionId, guestPath],
        get: { summary: 'List a directory', responses: { '200': json(FileListing), ...errors } },
      },
      '/healthz': { get: { summary: 'Liveness', security: [], responses: { '200': {} } } },
      '/metrics': {
        get: { summary: 'Prometheus metrics', security: [], responses: { '200': {} } },
      },
    },
  };
  return cached;
}
