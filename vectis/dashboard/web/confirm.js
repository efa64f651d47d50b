// One confirmation dialog for destructive actions (native <dialog>: modal, Escape cancels).

import { $, setText } from "./dom.js";

export function confirmAction({ title, text, action }) {
  const dialog = $("confirm");
  setText($("confirm-title"), title);
  setText($("confirm-text"), text);
  setText($("confirm-ok"), action);
  const opener = document.activeElement;
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
        resolve(dialog.returnValue === "ok");
      },
      { once: true },
    );
    dialog.returnValue = "cancel";
    dialog.showModal();
  });
}
