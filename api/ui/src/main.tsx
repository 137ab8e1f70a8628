// The runner UI's entry: `/` is the task list, `/tasks/{id}` a task. Served by the API process (no CDN,
// nothing fetched from elsewhere); every string from an event is rendered as text.
import { render } from "preact";
import { TaskList } from "./views/TaskList";
import { TaskPage } from "./views/TaskPage";

function route() {
  const match = /^\/tasks\/(.+)$/.exec(location.pathname);
  if (match) {
    let id: string;
    try {
      id = decodeURIComponent(match[1] as string);
    } catch {
      id = match[1] as string;
    }
    return <TaskPage taskId={id} />;
  }
  return <TaskList />;
}

const root = document.getElementById("app");
if (root) render(route(), root);
