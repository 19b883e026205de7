/**
 * The key of one writer's component among all the set's components (a component's own key,
 * `componentKey`, is unique only within its writer).
 */
export function componentId(writer: string, component: string): string {
  return `${writer}\0${component}`;
}
