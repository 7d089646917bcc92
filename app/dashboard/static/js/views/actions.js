// Actions shared by several views; each is one REST call behind a confirmation.
import { api } from "../api.js";
import { confirmAction, h, short } from "../ui.js";

export async function deleteTask(ctx, id, url) {
  const files = h("input", { type: "checkbox", id: "delete-files" });
  const ok = await confirmAction(`Delete task ${short(id)}?`, url || id,
    "Its state goes from Redis; clients still downloading it will register it again.",
    h("label", { class: "check" }, h("span", {}, files, " Also delete its seed-cache files")));
  if (!ok) return false;
  const full = files.checked;
  await ctx.act(`Task ${short(id)} deleted${full ? " with its seed files" : ""}.`,
    () => api(`/api/v1/tasks/${id}`, { method: "DELETE", query: { full } }));
  return true;
}
