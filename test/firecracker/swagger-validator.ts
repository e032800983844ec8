// A validator for the subset of Swagger 2.0 that Firecracker's API description uses: paths
// with {parameters}, body parameters, and definitions built from $ref, type, required,
// properties, additionalProperties, enum, items, minimum and maximum. It throws on any other
// schema keyword, so a new construct in the spec cannot be skipped without notice.
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';

export interface Schema {
  $ref?: string;
  type?: string;
  required?: string[];
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  enum?: unknown[];
  items?: Schema;
  minimum?: number;
  maximum?: number;
}

interface Parameter {
  name: string;
  in: 'body' | 'path' | 'query' | 'header';
  required?: boolean;
  schema?: Schema;
  type?: string;
}

interface Operation {
  parameters?: Parameter[];
  responses: Record<string, { schema?: Schema }>;
}

export interface SwaggerSpec {
  swagger: string;
  paths: Record<string, Record<string, Operation>>;
  definitions: Record<string, Schema>;
}

export interface RecordedRequest {
  method: string;
  path: string;
  /** The parsed JSON body, or undefined when the request had none. */
  body: unknown;
}

/** Keywords that only document a schema and never constrain a value. */
const ANNOTATIONS = new Set(['description', 'default', 'example', 'readOnly', 'format']);

const CONSTRAINTS = new Set([
  '$ref',
  'type',
  'required',
  'properties',
  'additionalProperties',
  'enum',
  'items',
  'minimum',
  'maximum',
]);

export function loadSpec(path: string): SwaggerSpec {
  const spec = parse(readFileSync(path, 'utf8')) as SwaggerSpec;
  if (spec.swagger !== '2.0') {
    throw new Error(`${path} is not a Swagger 2.0 document (swagger: ${String(spec.swagger)}).`);
  }
  return spec;
}

/** Finds the path template that `path` instantiates, e.g. /drives/rootfs → /drives/{drive_id}. */
export function matchPathTemplate(spec: SwaggerSpec, path: string): string | null {
  const segments = path.split('?')[0]!.split('/');
  let templated: string | null = null;
  for (const template of Object.keys(spec.paths)) {
    const parts = template.split('/');
    if (parts.length !== segments.length) continue;
    let literal = true;
    const matches = parts.every((part, index) => {
      if (/^\{[^}]+\}$/.test(part)) {
        literal = false;
        return segments[index] !== '';
      }
      return part === segments[index];
    });
    if (!matches) continue;
    if (literal) return template;
    templated ??= template;
  }
  return templated;
}

/** Lists every way `request` breaks the spec. An empty list means it conforms. */
export function validateRequest(spec: SwaggerSpec, request: RecordedRequest): string[] {
  const where = `${request.method} ${request.path}`;
  const template = matchPathTemplate(spec, request.path);
  if (!template) return [`${where}: the path matches no path in the spec`];

  const operation = spec.paths[template]![request.method.toLowerCase()];
  if (!operation) return [`${where}: ${template} has no ${request.method} operation`];

  const bodyParameter = operation.parameters?.find((parameter) => parameter.in === 'body');
  if (!bodyParameter) {
    return request.body === undefined ? [] : [`${where}: the operation takes no body`];
  }
  if (request.body === undefined) {
    return bodyParameter.required ? [`${where}: the required body is missing`] : [];
  }
  return validateValue(spec, bodyParameter.schema ?? {}, request.body, `${where} body`);
}

/** Lists every way a response breaks the schema that the spec gives for its status. */
export function validateResponse(
  spec: SwaggerSpec,
  request: { method: string; path: string },
  statusCode: number,
  body: unknown,
): string[] {
  const where = `${request.method} ${request.path} → ${statusCode}`;
  const template = matchPathTemplate(spec, request.path);
  const operation = template ? spec.paths[template]![request.method.toLowerCase()] : undefined;
  if (!operation) return [`${where}: no such operation in the spec`];

  const response = operation.responses[String(statusCode)] ?? operation.responses.default;
  if (!response) return [`${where}: the spec lists no such response`];
  if (!response.schema) {
    return body === undefined ? [] : [`${where}: the spec defines no body for this response`];
  }
  return validateValue(spec, response.schema, body, `${where} body`);
}

function resolveRef(spec: SwaggerSpec, ref: string): Schema {
  const prefix = '#/definitions/';
  const definition = ref.startsWith(prefix) ? spec.definitions[ref.slice(prefix.length)] : null;
  if (!definition) throw new Error(`The spec has no definition for $ref ${ref}.`);
  return definition;
}

function typeMatches(type: string, value: unknown): boolean {
  switch (type) {
    case 'object':
      return value !== null && typeof value === 'object' && !Array.isArray(value);
    case 'array':
      return Array.isArray(value);
    case 'string':
      return typeof value === 'string';
    case 'boolean':
      return typeof value === 'boolean';
    case 'integer':
      return Number.isInteger(value);
    case 'number':
      return typeof value === 'number' && Number.isFinite(value);
    default:
      throw new Error(`The validator does not support schema type ${JSON.stringify(type)}.`);
  }
}

/**
 * Lists every way `value` breaks `schema`, each prefixed with its location.
 *
 * An object schema with `properties` and no `additionalProperties` rejects unknown fields.
 * Swagger would allow them, but hearth chooses to be strict because a misspelt optional
 * field would otherwise pass unnoticed. `format` is documentation here and is not checked.
 */
export function validateValue(
  spec: SwaggerSpec,
  schema: Schema,
  value: unknown,
  where: string,
): string[] {
  // Swagger 2.0 ignores the siblings of $ref (Firecracker puts descriptions there).
  if (schema.$ref) return validateValue(spec, resolveRef(spec, schema.$ref), value, where);

  for (const keyword of Object.keys(schema)) {
    if (!CONSTRAINTS.has(keyword) && !ANNOTATIONS.has(keyword)) {
      throw new Error(`The validator does not support the keyword "${keyword}" (at ${where}).`);
    }
  }

  if (schema.type && !typeMatches(schema.type, value)) {
    return [`${where}: expected ${schema.type}, got ${JSON.stringify(value)}`];
  }

  const errors: string[] = [];
  if (schema.enum && !schema.enum.includes(value)) {
    errors.push(`${where}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) {
      errors.push(`${where}: ${value} is below the minimum ${schema.minimum}`);
    }
    if (schema.maximum !== undefined && value > schema.maximum) {
      errors.push(`${where}: ${value} is above the maximum ${schema.maximum}`);
    }
  }
  if (Array.isArray(value) && schema.items) {
    value.forEach((item, index) => {
      errors.push(...validateValue(spec, schema.items!, item, `${where}[${index}]`));
    });
  }
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    errors.push(...validateObject(spec, schema, value as Record<string, unknown>, where));
  }
  return errors;
}

function validateObject(
  spec: SwaggerSpec,
  schema: Schema,
  value: Record<string, unknown>,
  where: string,
): string[] {
  const errors: string[] = [];
  for (const name of schema.required ?? []) {
    if (!(name in value)) errors.push(`${where}: the required field "${name}" is missing`);
  }

  const properties = schema.properties ?? {};
  for (const [name, fieldValue] of Object.entries(value)) {
    const property = properties[name];
    if (property) {
      errors.push(...validateValue(spec, property, fieldValue, `${where}.${name}`));
    } else if (typeof schema.additionalProperties === 'object') {
      errors.push(
        ...validateValue(spec, schema.additionalProperties, fieldValue, `${where}.${name}`),
      );
    } else if (
      schema.additionalProperties === false ||
      (schema.additionalProperties === undefined && schema.properties)
    ) {
      errors.push(`${where}: the field "${name}" is not in the schema`);
    }
  }
  return errors;
}
