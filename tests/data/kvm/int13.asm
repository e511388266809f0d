; int13.asm -- INT 13h as a boot program uses it: CHS read of 3 sectors, an
; extended read (disk address packet), AH=08 geometry, a bad drive number;
; results on isa-debugcon (0xE9), exit through isa-debug-exit (0xF4).
BITS 16
ORG 0x7C00
  cli
  xor ax, ax
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov sp, 0x7c00
  mov [drv], dl
  ; CHS read: sectors 2..4 (LBA 1..3) to 0:7E00
  mov ax, 0x0203
  mov cx, 0x0002
  xor dh, dh
  mov dl, [drv]
  mov bx, 0x7E00
  int 0x13
  jc fail
  ; report AL (count) then the LBA words of each loaded sector (u32 LE at start)
  out 0xE9, al
  mov al, [0x7E00]
  out 0xE9, al
  mov al, [0x8000]
  out 0xE9, al
  mov al, [0x8200]
  out 0xE9, al
  ; extended read of LBA 0x20 to 0:9000
  mov si, dap
  mov ah, 0x42
  mov dl, [drv]
  int 0x13
  jc fail
  mov al, [0x9000]
  out 0xE9, al
  ; AH=08 parameters: report DH (max head) and CL & 0x3f (spt)
  mov ah, 0x08
  mov dl, [drv]
  int 0x13
  jc fail
  mov al, dh
  out 0xE9, al
  mov al, cl
  and al, 0x3f
  out 0xE9, al
  ; a bad drive: CF set, AH=01
  mov ah, 0x02
  mov al, 1
  mov cx, 1
  mov dl, 0x85
  mov bx, 0x9200
  int 0x13
  mov al, ah
  out 0xE9, al
  mov al, 0x10
  out 0xF4, al
fail:
  mov al, 0xEE
  out 0xE9, al
  mov al, 0x11
  out 0xF4, al
  jmp $
drv: db 0
align 4
dap: db 16, 0
     dw 1, 0x9000, 0
     dq 0x20
  times 510-($-$$) db 0
  dw 0xAA55
